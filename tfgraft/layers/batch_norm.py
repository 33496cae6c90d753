"""`BatchNormalization` computed by TensorFlow's fused kernel.

Keras 3 computes batch normalisation from separate ops (`moments`, then an
affine transform), and their gradient from a dozen more. TensorFlow's
`FusedBatchNormV3` does the forward pass in one kernel and the backward pass
in another (`FusedBatchNormGradV3`); with oneDNN both are vectorised, and
oneDNN's graph rewrite folds it into the preceding conv at inference. On a
2-core CPU this alone raises CIFAR ResNet-20 training throughput by about a
third (`bench/throughput.py`).
"""

import keras
import tensorflow as tf

# cuDNN refuses epsilon < 1e-5 and float32(1e-5) rounds below it; TF's own
# `fused_batch_norm` wrapper clamps to this value for the same reason.
_MIN_EPSILON = 1.001e-5


@keras.saving.register_keras_serializable(package="tfgraft")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` with TensorFlow's fused kernel.

    Same arguments, weights, moving-statistics update and results (to float
    rounding) as `keras.layers.BatchNormalization`; a drop-in replacement
    with the same variable names, so checkpoints load either way. The fused
    kernel serves 4-D inputs normalised over the last axis without a mask,
    renorm or synchronisation; anything else falls back to the parent's
    implementation.

    Two differences below float32 noise, documented for completeness: the
    epsilon is raised to at least 1.001e-5 (cuDNN's floor, applied on every
    device so CPU and GPU agree), and the moving variance is updated with
    the biased batch variance recovered from the kernel's Bessel-corrected
    one, as Keras does.

    Args:
        **kwargs: `keras.layers.BatchNormalization` arguments.

    Call arguments:
        inputs: tensor of rank 4, channels last for the fused path.
        training: Python bool; batch statistics (and moving-statistics
            update) when true and the layer is trainable.
        mask: optional; disables the fused path.

    Returns:
        The normalised tensor, in the layer's compute dtype.

    Example:

    >>> layer = FusedBatchNormalization(momentum=0.9, epsilon=1e-5)
    >>> y = layer(tf.ones((2, 4, 4, 3)), training=True)
    >>> tuple(y.shape)
    (2, 4, 4, 3)

    Reference:
        Ioffe & Szegedy, "Batch Normalization", ICML 2015.
    """

    # Subclasses that normalise with batch statistics but must not move
    # the moving ones (`FrozenStatsBatchNormalization`) set this False.
    _update_moving_statistics = True

    def _fused_ok(self, inputs, training, mask):
        return (
            mask is None
            and not self.renorm
            and not self.synchronized
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and isinstance(training, (bool, type(None)))
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fused_ok(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        # As the parent: statistics in float32 even under mixed precision.
        x = tf.cast(inputs, "float32")
        channels = x.shape[-1]
        gamma = self.gamma if self.scale else tf.ones([channels], "float32")
        beta = self.beta if self.center else tf.zeros([channels], "float32")
        gamma, beta = tf.cast(gamma, "float32"), tf.cast(beta, "float32")
        epsilon = max(float(self.epsilon), _MIN_EPSILON)
        training = bool(training and self.trainable)
        mean = variance = None  # batch statistics
        if not training:
            mean = tf.cast(self.moving_mean, "float32")
            variance = tf.cast(self.moving_variance, "float32")
        # TensorFlow's wrapper of FusedBatchNormV3 (NHWC, no averaging).
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, gamma, beta, mean, variance, epsilon, is_training=training
        )
        if training and self._update_moving_statistics:
            # The kernel returns the unbiased variance; Keras (and this
            # layer's moving statistics) use the biased one.
            n = tf.cast(tf.size(x) // channels, "float32")
            variance = variance * ((n - 1.0) / tf.maximum(n, 1.0))
            m = self.momentum
            self.moving_mean.assign(
                self.moving_mean * m + tf.stop_gradient(mean) * (1.0 - m)
            )
            self.moving_variance.assign(
                self.moving_variance * m
                + tf.stop_gradient(variance) * (1.0 - m)
            )
        return tf.cast(y, self.compute_dtype)
