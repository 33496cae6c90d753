"""Standardize: 0-1-scale statistics on 0-255 input, anything else refused."""

import json

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tfgraft.layers.standardize import Standardize
from tfgraft.testing import test_case


class StandardizeTest(tf.test.TestCase, parameterized.TestCase):
    def test_numpy_reference(self):
        mean, std = (0.4914, 0.4822, 0.4465, 0.5), (0.2023, 0.1994, 0.2, 0.25)
        x = np.random.RandomState(0).uniform(0, 255, (2, 8, 8, 4))
        out = Standardize(mean, std)(x.astype("float32"))
        want = (x / 255.0 - np.array(mean)) / np.array(std)
        self.assertAllClose(out, want, rtol=1e-5, atol=1e-5)

    def test_scale_edges_accepted(self):
        layer = Standardize(mean=(0.0, 1.0), std=(1.0, 1e-3))
        self.assertEqual(layer.mean, (0.0, 1.0))
        self.assertEqual(layer.std, (1.0, 1e-3))

    @parameterized.named_parameters(
        (
            "mean_on_255_scale",
            dict(mean=[127] * 3, std=[0.25] * 3),
            "Standardize 'norm': mean=(127.0, 127.0, 127.0): each must be "
            "in [0, 1] (the 0-1 scale; the layer divides its 0-255 input "
            "by 255 first)",
        ),
        (
            "negative_mean",
            dict(mean=[-0.1], std=[0.25]),
            "Standardize 'norm': mean=(-0.1,): each must be in [0, 1]",
        ),
        (
            "nan_mean",
            dict(mean=[float("nan")], std=[0.25]),
            "Standardize 'norm': mean=(nan,): each must be in [0, 1]",
        ),
        (
            "std_on_255_scale",
            dict(mean=[0.5] * 3, std=[63.0] * 3),
            "Standardize 'norm': std=(63.0, 63.0, 63.0): each must be in "
            "(0, 1]",
        ),
        (
            "zero_std",
            dict(mean=[0.5], std=[0.0]),
            "Standardize 'norm': std=(0.0,): each must be in (0, 1]",
        ),
        (
            "lengths",
            dict(mean=[0.5] * 3, std=[0.25]),
            "Standardize 'norm' needs one std per mean.",
        ),
    )
    def test_refuses_other_scales(self, kwargs, message):
        with self.assertRaises(ValueError) as ctx:
            Standardize(name="norm", **kwargs)
        text = str(ctx.exception)
        self.assertStartsWith(text, message)
        self.assertNotIn("\n", text)
        self.assertNotIn("--", text)

    def test_saved_configs_load(self):
        # A config as tfgraft has always written it (lists, 0-1 scale).
        config = json.loads(
            '{"name": "standardize", "trainable": true, "dtype": "float32",'
            ' "mean": [0.4914, 0.4822, 0.4465],'
            ' "std": [0.2023, 0.1994, 0.201]}'
        )
        layer = Standardize.from_config(config)
        self.assertEqual(layer.mean, (0.4914, 0.4822, 0.4465))
        self.assertEqual(layer.get_config()["std"], [0.2023, 0.1994, 0.201])

    def test_keras_round_trip(self):
        inputs = keras.Input((8, 8, 4))
        model = keras.Model(
            inputs, Standardize((0.5,) * 4, (0.25,) * 4)(inputs)
        )
        x = np.random.RandomState(1).uniform(0, 255, (2, 8, 8, 4))
        x = x.astype("float32")
        loaded = test_case.keras_round_trip(model, self.get_temp_dir())
        self.assertAllClose(loaded(x), model(x), atol=1e-6)


if __name__ == "__main__":
    tf.test.main()
