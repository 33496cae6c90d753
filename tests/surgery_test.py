"""Tests for tfgraft.surgery: rebuilding a functional model's graph."""

import keras
import numpy as np
import tensorflow as tf

from tfgraft import graph as graph_lib
from tfgraft import surgery


def _residual(seed=0):
    """Stem, a block closed by a keras op (`x + y`), a projection block."""
    keras.utils.set_random_seed(seed)
    layers = keras.layers

    def conv_bn(x, filters, strides=1, kernel=3, relu=True, name=None):
        x = layers.Conv2D(
            filters, kernel, strides, padding="same", use_bias=False, name=name
        )(x)
        x = layers.BatchNormalization()(x)
        return layers.ReLU()(x) if relu else x

    inputs = keras.Input((8, 8, 3))
    x = layers.Rescaling(1 / 255.0)(inputs)
    x = conv_bn(x, 8, name="stem")
    y = conv_bn(conv_bn(x, 6, name="inner"), 8, relu=False, name="close")
    x = layers.ReLU()(x + y)
    y = conv_bn(x, 12, strides=2, name="down")
    x = layers.Flatten()(y)
    return keras.Model(inputs, layers.Dense(5, name="logits")(x), name="res")


class RebuildTest(tf.test.TestCase):
    def test_clone_has_the_same_outputs_names_and_independent_weights(self):
        model = _residual()
        copy = surgery.clone(model)
        x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3))
        for training in (False, True):
            self.assertAllEqual(
                copy(x, training=training), model(x, training=training)
            )
        self.assertEqual(
            [layer.name for layer in copy.layers],
            [layer.name for layer in model.layers],
        )
        copy.get_layer("stem").kernel.assign(
            np.zeros(copy.get_layer("stem").kernel.shape)
        )
        self.assertGreater(
            float(np.abs(model.get_layer("stem").kernel).sum()), 0.0
        )

    def test_filters_narrow_the_conv_and_every_reader(self):
        model = _residual()
        narrow = surgery.rebuild(model, filters={"inner": 3, "down": 4})
        self.assertEqual(narrow.get_layer("inner").kernel.shape, (3, 3, 8, 3))
        self.assertEqual(narrow.get_layer("close").kernel.shape, (3, 3, 3, 8))
        self.assertEqual(narrow.get_layer("down").kernel.shape, (3, 3, 8, 4))
        # The dense layer after Flatten reads 4 x 4 positions x 4 channels.
        self.assertEqual(narrow.get_layer("logits").kernel.shape, (64, 5))
        graph = graph_lib.analyze(narrow)
        self.assertEqual(graph.nodes["logits"].in_spatial, 16)

    def test_layer_factory_replaces_layers(self):
        model = _residual()

        def factory(layer, config):
            if layer.name == "stem":
                config = dict(config, use_bias=True)
                return keras.layers.Conv2D.from_config(config)
            return None

        new = surgery.rebuild(model, layer_factory=factory)
        self.assertTrue(new.get_layer("stem").use_bias)
        self.assertFalse(new.get_layer("inner").use_bias)

    def test_bad_requests_name_the_layer(self):
        model = _residual()
        with self.assertRaisesRegex(
            surgery.SurgeryError, "^filters names 'logits', which is not"
        ):
            surgery.rebuild(model, filters={"logits": 3})
        with self.assertRaisesRegex(
            surgery.SurgeryError, r"^filters\['stem'\] must be a positive"
        ):
            surgery.rebuild(model, filters={"stem": 0})
        narrow = surgery.rebuild(model, filters={"inner": 3})
        with self.assertRaisesRegex(
            surgery.SurgeryError, "^layer 'inner': weight shapes differ"
        ):
            surgery.copy_weights(model, narrow)


if __name__ == "__main__":
    tf.test.main()
