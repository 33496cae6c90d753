"""FusedBatchNormalization matches keras.layers.BatchNormalization."""

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tfgraft.layers import FusedBatchNormalization
from tfgraft.testing import test_case


def _pair(shape, **kwargs):
    """A Keras BN and a fused BN with the same (non-trivial) weights."""
    ref = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, **kwargs)
    fused = FusedBatchNormalization(momentum=0.9, epsilon=1e-5, **kwargs)
    ref.build(shape)
    fused.build(shape)
    rng = np.random.default_rng(0)
    weights = [w + rng.uniform(0.1, 0.5, w.shape) for w in ref.get_weights()]
    ref.set_weights(weights)
    fused.set_weights(weights)
    return ref, fused


class FusedBatchNormTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.x = tf.random.stateless_normal((6, 5, 5, 4), seed=(1, 2)) * 3 + 1

    @parameterized.named_parameters(
        ("training", True, {}),
        ("inference", False, {}),
        ("no_affine_training", True, {"center": False, "scale": False}),
        ("no_affine_inference", False, {"center": False, "scale": False}),
    )
    def test_outputs_gradients_and_moving_stats_match_keras(
        self, training, kwargs
    ):
        ref, fused = _pair(self.x.shape, **kwargs)
        weights = tf.range(4, dtype="float32") + 1.0
        mean_before = fused.moving_mean.numpy()
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(self.x)
            y_ref = ref(self.x, training=training)
            y_fused = fused(self.x, training=training)
            loss_ref = tf.reduce_sum(y_ref * weights)
            loss_fused = tf.reduce_sum(y_fused * weights)
        self.assertAllClose(y_ref, y_fused, atol=2e-5)
        self.assertAllClose(
            tape.gradient(loss_ref, self.x),
            tape.gradient(loss_fused, self.x),
            atol=2e-5,
        )
        if kwargs.get("scale", True):
            self.assertAllClose(
                tape.gradient(loss_ref, ref.gamma),
                tape.gradient(loss_fused, fused.gamma),
                atol=1e-4,
            )
        for a, b in zip(ref.get_weights(), fused.get_weights()):
            self.assertAllClose(a, b, atol=1e-6)
        if training:
            # The moving statistics really moved (the test can fail).
            self.assertNotAllClose(fused.moving_mean, mean_before)
        else:
            self.assertAllEqual(fused.moving_mean, mean_before)

    def test_moving_variance_uses_biased_batch_variance(self):
        layer = FusedBatchNormalization(momentum=0.0)
        layer(self.x, training=True)
        self.assertAllClose(
            layer.moving_variance,
            tf.math.reduce_variance(self.x, axis=(0, 1, 2)),
            rtol=1e-5,
        )

    def test_under_xla(self):
        ref, fused = _pair(self.x.shape)

        @tf.function(jit_compile=True)
        def run(x):
            return fused(x, training=True)

        self.assertAllClose(run(self.x), ref(self.x, training=True), atol=2e-5)

    def test_float16_inputs_follow_the_parent(self):
        ref, fused = _pair(self.x.shape, dtype="mixed_float16")
        x = tf.cast(self.x, "float16")
        y_ref = ref(x, training=True)
        y_fused = fused(x, training=True)
        self.assertEqual(y_fused.dtype, tf.float16)
        self.assertAllClose(y_ref, y_fused, atol=1e-2)

    def test_non_4d_input_falls_back_to_parent(self):
        ref, fused = _pair((6, 4))
        x = tf.reshape(self.x, (-1, 4))[:6]
        self.assertAllClose(
            ref(x, training=True), fused(x, training=True), atol=1e-6
        )

    def test_frozen_layer_uses_moving_statistics(self):
        ref, fused = _pair(self.x.shape)
        fused.trainable = False
        ref.trainable = False
        before = fused.get_weights()
        self.assertAllClose(
            ref(self.x, training=True),
            fused(self.x, training=True),
            atol=2e-5,
        )
        for a, b in zip(before, fused.get_weights()):
            self.assertAllEqual(a, b)

    def test_serialization_and_checkpoint_interchange(self):
        inputs = keras.Input((5, 5, 4))
        model = keras.Model(
            inputs, FusedBatchNormalization(name="bn")(inputs, training=False)
        )
        model.layers[-1].set_weights(
            [np.full(4, v, "float32") for v in (2.0, 0.5, 1.0, 4.0)]
        )
        loaded = test_case.keras_round_trip(
            model, self.create_tempdir().full_path
        )
        self.assertIsInstance(loaded.layers[-1], FusedBatchNormalization)
        self.assertAllClose(loaded(self.x), model(self.x))
        # Same variable structure as the Keras layer: checkpoints load
        # either way.
        ref = keras.layers.BatchNormalization(name="bn")
        ref.build(self.x.shape)
        ckpt = tf.train.Checkpoint(layer=model.layers[-1])
        prefix = ckpt.write(self.create_tempdir().full_path + "/c")
        tf.train.Checkpoint(layer=ref).read(prefix).assert_consumed()
        self.assertAllClose(ref.gamma, np.full(4, 2.0))


if __name__ == "__main__":
    tf.test.main()
