"""Tests for tfgraft.layers.hyper_conv (METHODS.md §4.6 checks 1-2)."""

import os

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tfgraft.layers import hyper_conv
from tfgraft.layers.hyper_conv import HyperConv2D
from tfgraft.testing import test_case


def _randomize_biases(layer, seed=0):
    # The biases start at zero; random ones make every check sensitive to
    # how they are sliced and added.
    rng = np.random.default_rng(seed)
    for v in (layer.bias0, layer.bias1, layer.bias2):
        v.assign(rng.normal(0.0, 0.3, v.shape).astype("float32"))


def _numpy_kernel(layer):
    """The four steps of METHODS §4.2 with explicit loops over (in, out)."""
    z_in, z_out, b0, w1, b1, w2, b2 = [
        keras.ops.convert_to_numpy(v).astype(np.float64)
        for v in layer.hypernetwork_variables()
    ]
    kh, kw = layer.kernel_size
    c_in, c_out = len(z_in), len(z_out)
    torch_kernel = np.zeros((c_out, c_in, kh, kw))
    for i in range(c_in):
        for o in range(c_out):
            m = z_in[i] * z_out[o] + b0[i, o]
            e = m * w1[i, o] + b1[i, o]  # [D]
            v = w2[i, o] @ e + b2[i, o]  # [k*k]
            torch_kernel[o, i] = v.reshape(kh, kw)
    return torch_kernel.transpose(2, 3, 1, 0)


class HyperConv2DTest(tf.test.TestCase, parameterized.TestCase):
    def test_shape_and_weight_count(self):
        keras.utils.set_random_seed(0)
        layer = HyperConv2D(8, 3, padding="same", embedding_dim=2)
        out = layer(np.zeros((2, 8, 8, 4), "float32"))
        self.assertEqual(tuple(out.shape), (2, 8, 8, 8))
        self.assertEqual(tuple(layer.kernel.shape), (3, 3, 4, 8))
        shapes = [tuple(v.shape) for v in layer.weights]
        self.assertEqual(
            shapes,
            [
                (4,),
                (8,),
                (4, 8),
                (4, 8, 2),
                (4, 8, 2),
                (4, 8, 9, 2),
                (4, 8, 9),
                (8,),
            ],
        )
        self.assertLen(layer.trainable_weights, 8)

    @parameterized.named_parameters(
        ("k3_stride1", 3, 1, "same"), ("k1_stride2", 1, 2, "valid")
    )
    def test_matches_numpy_reference(self, kernel_size, strides, padding):
        keras.utils.set_random_seed(1)
        layer = HyperConv2D(
            6,
            kernel_size,
            strides=strides,
            padding=padding,
            embedding_dim=3,
            use_bias=False,
        )
        x = np.random.default_rng(2).normal(size=(2, 8, 8, 4))
        x = x.astype("float32")
        layer(x)
        _randomize_biases(layer)
        expected_kernel = _numpy_kernel(layer)
        self.assertAllClose(layer.kernel, expected_kernel, rtol=1e-5, atol=1e-6)
        expected = tf.nn.conv2d(
            x,
            expected_kernel.astype("float32"),
            strides=strides,
            padding=padding.upper(),
        )
        self.assertAllClose(layer(x), expected, rtol=5e-4, atol=1e-5)

    @parameterized.named_parameters(
        ("k3_bool", 3, "bool"), ("k1_index", 1, "index"), ("k5_bool", 5, "bool")
    )
    def test_sliced_generation_equals_slice(self, kernel_size, kind):
        # §4.6 check 1: generating from sliced latents and hypernetwork
        # tensors gives exactly the sub-block of the full kernel.
        keras.utils.set_random_seed(3)
        layer = HyperConv2D(12, kernel_size, embedding_dim=4, use_bias=False)
        layer.build((None, 9, 9, 10))
        _randomize_biases(layer, seed=4)
        rng = np.random.default_rng(5)
        mask_in = rng.random(10) < 0.5
        mask_out = rng.random(12) < 0.6
        full = keras.ops.convert_to_numpy(layer.kernel)
        if kind == "bool":
            sliced = layer.materialize(mask_in, mask_out)
        else:
            sliced = layer.materialize(
                np.flatnonzero(mask_in), np.flatnonzero(mask_out)
            )
        expected = full[:, :, mask_in][:, :, :, mask_out]
        self.assertEqual(
            sliced.shape,
            (kernel_size, kernel_size, mask_in.sum(), mask_out.sum()),
        )
        self.assertAllClose(sliced, expected, rtol=0, atol=1e-6)
        self.assertAllClose(layer.materialize(), full, rtol=0, atol=1e-6)

    @parameterized.named_parameters(
        ("k3_d8", 3, 8, 64, 32),
        ("k3_d2", 3, 2, 48, 32),
        ("k1_d8", 1, 8, 128, 96),
    )
    def test_initial_variance(self, kernel_size, dim, c_in, c_out):
        # §4.6 check 2: conditional on z, the kernel variance at init is
        # mean(z_in^2) mean(z_out^2) / (C_in k^2), within 10%.
        keras.utils.set_random_seed(6)
        layer = HyperConv2D(
            c_out, kernel_size, embedding_dim=dim, use_bias=False
        )
        layer.build((None, 8, 8, c_in))
        kernel = keras.ops.convert_to_numpy(layer.kernel).astype(np.float64)
        self.assertGreaterEqual(kernel.size, 10_000)
        z_in = keras.ops.convert_to_numpy(layer.latent_in)
        z_out = keras.ops.convert_to_numpy(layer.latent_out)
        expected = (
            np.mean(z_in**2) * np.mean(z_out**2) / (c_in * kernel_size**2)
        )
        self.assertAllClose(np.var(kernel), expected, rtol=0.1)
        # With N(0, 1) latents that is about 1 / fan_in.
        self.assertAllClose(
            np.var(kernel) * c_in * kernel_size**2, 1.0, rtol=0.5
        )

    def test_shared_latents(self):
        keras.utils.set_random_seed(7)
        stream = keras.Variable(
            np.ones(6, "float32"), name="stream", trainable=True
        )
        inputs = keras.Input((8, 8, 6))
        a = HyperConv2D(
            4, 3, padding="same", embedding_dim=2, latent_in=stream, name="a"
        )
        b = HyperConv2D(
            6, 3, padding="same", embedding_dim=2, latent_out=stream, name="b"
        )
        model = keras.Model(inputs, b(a(inputs)))
        ids = [id(v) for v in model.trainable_variables]
        self.assertEqual(ids.count(id(stream)), 1)
        self.assertLen(set(ids), len(ids))
        x = np.random.default_rng(8).normal(size=(2, 8, 8, 6))
        x = x.astype("float32")
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x) ** 2)
        grad = tape.gradient(loss, stream)
        self.assertGreater(float(tf.reduce_sum(tf.abs(grad))), 0.0)
        # Scaling the shared latent scales both generated kernels.
        ka, kb = a.kernel.numpy(), b.kernel.numpy()
        stream.assign(2.0 * np.ones(6, "float32"))
        self.assertAllClose(a.kernel, 2.0 * ka, rtol=1e-6)
        self.assertAllClose(b.kernel, 2.0 * kb, rtol=1e-6)

    def test_get_config_round_trip(self):
        layer = HyperConv2D(
            8, 3, strides=2, padding="same", embedding_dim=5, name="h"
        )
        config = layer.get_config()
        self.assertEqual(config["embedding_dim"], 5)
        clone = HyperConv2D.from_config(config)
        self.assertEqual(clone.get_config(), config)
        restored = test_case.config_round_trip(layer)
        self.assertIsInstance(restored, HyperConv2D)
        self.assertEqual(restored.embedding_dim, 5)

    @parameterized.named_parameters(("own", False), ("shared", True))
    def test_keras_and_saved_model_round_trip(self, shared):
        keras.utils.set_random_seed(9)
        inputs = keras.Input((8, 8, 4))
        latent = None
        if shared:
            latent = keras.Variable(
                np.random.default_rng(1).normal(size=8).astype("float32"),
                name="z",
            )
        x = HyperConv2D(
            8, 3, padding="same", embedding_dim=2, latent_out=latent
        )(inputs)
        x = keras.layers.ReLU()(x)
        x = HyperConv2D(4, 1, embedding_dim=2, latent_in=latent)(x)
        model = keras.Model(inputs, x)
        for layer in model.layers:
            if isinstance(layer, HyperConv2D):
                _randomize_biases(layer, seed=len(layer.name))
        data = np.random.default_rng(2).normal(size=(2, 8, 8, 4))
        data = data.astype("float32")
        expected = model(data)
        tmp = self.get_temp_dir()
        reloaded = test_case.keras_round_trip(
            model, tmp, f"hyper_{shared}.keras"
        )
        self.assertAllClose(reloaded(data), expected, atol=1e-6)
        export_dir = os.path.join(tmp, f"saved_{shared}")
        model.export(export_dir, format="tf_saved_model")
        # Keep the loaded object alive: its functions use its variables.
        loaded = tf.saved_model.load(export_dir)
        self.assertAllClose(loaded.serve(data), expected, atol=1e-5)

    def test_generate_kernel_is_pure(self):
        rng = np.random.default_rng(3)
        args = [
            rng.normal(size=s).astype("float32")
            for s in [(2,), (3,), (2, 3), (2, 3, 4), (2, 3, 4), (2, 3, 1, 4)]
        ]
        args.append(rng.normal(size=(2, 3, 1)).astype("float32"))
        kernel = hyper_conv.generate_kernel(*args, (1, 1))
        z_in, z_out, b0, w1, b1, w2, b2 = args
        m = np.outer(z_in, z_out) + b0
        v = np.einsum("iokd,iod->iok", w2, m[..., None] * w1 + b1) + b2
        self.assertAllClose(kernel, v.reshape(1, 1, 2, 3), rtol=1e-5)

    @parameterized.named_parameters(
        ("embedding_zero", dict(embedding_dim=0), "embedding_dim"),
        ("groups", dict(groups=2), "groups"),
        (
            "latent_out_size",
            dict(latent_out=keras.Variable(np.zeros(3, "float32"))),
            "latent_out",
        ),
        (
            "latent_rank",
            dict(latent_in=keras.Variable(np.zeros((2, 2), "float32"))),
            "1-D",
        ),
    )
    def test_invalid_arguments(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            HyperConv2D(8, 3, **kwargs)

    def test_latent_in_must_match_input(self):
        layer = HyperConv2D(
            8, 3, latent_in=keras.Variable(np.zeros(3, "float32"))
        )
        with self.assertRaisesRegex(ValueError, "latent_in has 3 entries"):
            layer.build((None, 8, 8, 4))

    def test_materialize_rejects_bad_masks(self):
        layer = HyperConv2D(8, 3)
        with self.assertRaisesRegex(ValueError, "must be built"):
            layer.materialize()
        layer.build((None, 8, 8, 4))
        with self.assertRaisesRegex(ValueError, "mask_in must have 4"):
            layer.materialize(mask_in=[True, False])
        with self.assertRaisesRegex(ValueError, r"indices must lie in"):
            layer.materialize(mask_out=[0, 8])


if __name__ == "__main__":
    tf.test.main()
