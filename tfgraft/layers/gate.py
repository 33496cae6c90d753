"""EKG channel gates and the masked layers they drive (METHODS.md §3.2).

`ChannelGate` masks an activation's channels by importance rank and
measures their importance; `GatedConv2D` / `GatedDense` mask and rescale
their kernel; `FrozenStatsBatchNormalization` never moves its statistics.
The masks of `GatedConv2D`/`GatedDense` are their own non-trainable
variables (so the layers save, reload and export alone); whoever changes a
gate's order or rate copies the gate's `mask()` into them
(`tfgraft.ekg.gated.GatedNetwork.sync` does).
"""

import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tfgraft.layers.batch_norm import FusedBatchNormalization
from tfgraft.layers.own_variables import OwnVariablesMixin


def kept_channels(channels, rate):
    """Number of channels a gate keeps: `max(1, ceil(channels * rate))`.

    The product is taken in float32, exactly as `ChannelGate.mask` does, so
    callers that count channels on the host (the search's FLOPs model, the
    extraction) always agree with the mask on the device.

    Args:
        channels: channel count `C` of the gate.
        rate: kept fraction (the gate's `rate`).

    Returns:
        An int in `[1, channels]`.
    """
    product = float(np.float32(channels) * np.float32(rate))
    return int(min(channels, max(1, math.ceil(product))))


def masked_kernel(kernel, in_mask=None, out_mask=None):
    """`kernel * (in_mask ⊗ out_mask)` rescaled to the norm of `kernel`.

    The kernel's last axis is its output channels and the one before its
    input channels (`[kh, kw, in, out]` convs, `[in, out]` dense). The whole
    masked tensor is l2-normalised and multiplied by the unmasked kernel's
    Frobenius norm, as the reference does, so pruning keeps the layer's
    overall weight magnitude.

    Args:
        kernel: float tensor of rank >= 2.
        in_mask: optional `[in]` 0/1 mask.
        out_mask: optional `[out]` 0/1 mask.

    Returns:
        A tensor shaped like `kernel`.
    """
    kernel = ops.convert_to_tensor(kernel)
    masked = kernel
    if in_mask is not None:
        m = ops.cast(in_mask, kernel.dtype)
        masked = masked * ops.reshape(m, (-1, 1))
    if out_mask is not None:
        masked = masked * ops.cast(out_mask, kernel.dtype)
    full = ops.sqrt(ops.sum(ops.square(kernel)))
    norm = ops.sqrt(ops.sum(ops.square(masked)))
    # An all-zero kernel stays zero instead of becoming NaN.
    scale = ops.where(norm > 0, full / ops.maximum(norm, 1e-30), 1.0)
    return masked * scale


def _state(layer, name, shape, initializer):
    """A non-trainable float32 variable of `layer`, never autocast."""
    return layer.add_weight(
        name=name,
        shape=shape,
        initializer=initializer,
        trainable=False,
        dtype="float32",
        autocast=False,
        aggregation="mean",
    )


@tf.custom_gradient
def _gate(x, mask, score):
    y = x * mask

    def grad(dy):
        axes = list(range(len(y.shape) - 1))
        # d/dscore = |sum over batch and positions of dy * y| per channel;
        # y is masked, so pruned channels score exactly 0. The input gets
        # the unmasked upstream gradient (straight through).
        importance = ops.abs(
            ops.sum(ops.cast(dy, "float32") * ops.cast(y, "float32"), axes)
        )
        return dy, ops.zeros_like(mask), ops.cast(importance, score.dtype)

    return y, grad


@keras.saving.register_keras_serializable(package="tfgraft")
class ChannelGate(keras.layers.Layer):
    """Masks channels by importance rank and measures their importance.

    The gate holds three non-trainable variables for its `C` channels:
    `score[C]` (accumulated importance), `order[C]` (rank of each channel,
    0 = most important) and a scalar `rate` (kept fraction, initially 1).
    Its mask keeps the channels whose order is below `max(C * rate, 1)`,
    i.e. the `max(1, ceil(C * rate))` most important ones.

    The forward pass is `y = x * mask`. The gradient is custom: the input
    receives the upstream gradient unmasked, and `score` receives
    `|sum_{batch, h, w} dy * y|` per channel, so pruned channels get 0 and
    `tape.gradient(loss, gate.score)` is the EKG importance of a batch. A
    gate shared by several call sites (a residual stream) sums the terms of
    all its calls.

    Args:
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: tensor `(..., channels)`.

    Returns:
        `inputs * mask`, same shape and dtype.

    Example:

    >>> gate = ChannelGate()
    >>> y = gate(keras.ops.ones((2, 8, 8, 4)))
    >>> _ = gate.rate.assign(0.5)
    >>> float(keras.ops.sum(gate.mask()))
    2.0

    Reference:
        - [Lee & Song, "Ensemble Knowledge Guided Sub-network Search and
          Fine-tuning for Filter Pruning", ECCV 2022](
          https://arxiv.org/abs/2203.02651)
    """

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(
                f"ChannelGate '{self.name}' needs a known channel axis. "
                f"Received: input_shape={input_shape}"
            )
        self.channels = int(channels)
        self.score = _state(self, "score", (self.channels,), "zeros")
        self.order = _state(self, "order", (self.channels,), "zeros")
        self.rate = _state(self, "rate", (), "ones")
        self.order.assign(np.arange(self.channels, dtype=np.float32))

    def mask(self):
        """float32 `[C]` 0/1 mask of the kept channels."""
        keep = ops.maximum(float(self.channels) * self.rate, 1.0)
        return ops.cast(ops.less(self.order, keep), "float32")

    def set_order_from_scores(self, scores=None):
        """Sets `order` to the descending rank of `scores` (default: own).

        Ties keep the channel index order (stable sort), so equal scores
        never reorder channels arbitrarily.
        """
        scores = np.asarray(
            self.score.numpy() if scores is None else scores, np.float64
        )
        ranking = np.argsort(-scores, kind="stable")
        order = np.empty(self.channels, np.float32)
        order[ranking] = np.arange(self.channels, dtype=np.float32)
        self.order.assign(order)
        return order

    def call(self, inputs):
        mask = ops.cast(self.mask(), inputs.dtype)
        return _gate(inputs, mask, ops.convert_to_tensor(self.score))

    def compute_output_shape(self, input_shape):
        return input_shape


class _MaskedKernel(OwnVariablesMixin):
    """`in_mask` (and `out_mask`) after the parent's `build`, saved too."""

    _mask_outputs = True

    def build(self, input_shape):
        super().build(input_shape)
        in_channels = self.kernel.shape[-2]
        self.in_mask = _state(self, "in_mask", (in_channels,), "ones")
        self.out_mask = None
        if self._mask_outputs:
            out_channels = self.kernel.shape[-1]
            self.out_mask = _state(self, "out_mask", (out_channels,), "ones")

    def masked_kernel(self):
        """The kernel the layer computes with."""
        return masked_kernel(self.kernel, self.in_mask, self.out_mask)


@keras.saving.register_keras_serializable(package="tfgraft")
class GatedConv2D(_MaskedKernel, keras.layers.Conv2D):
    """`Conv2D` whose kernel is channel-masked and norm-rescaled.

    The layer adds two non-trainable float32 variables, `in_mask[in]` and
    `out_mask[out]` (all ones at build). The convolution uses
    `masked_kernel(kernel, in_mask, out_mask)`: the kernel times the outer
    product of the masks, rescaled to the unmasked kernel's Frobenius norm.
    With all-one masks it is a plain `Conv2D`. EKG copies its gates' masks
    into these variables; extraction slices the same rescaled kernel, so the
    compact network computes exactly what the masked one does.

    Args:
        filters: output channels, as in `Conv2D`.
        kernel_size: as in `Conv2D`.
        *args: further positional `Conv2D` arguments.
        **kwargs: `Conv2D` and base layer keyword arguments.

    Call arguments:
        inputs: a 4D tensor, as for `Conv2D`.

    Returns:
        The convolution with the masked, rescaled kernel.

    Example:

    >>> layer = GatedConv2D(8, 3, padding="same", use_bias=False)
    >>> y = layer(keras.ops.ones((2, 8, 8, 4)))
    >>> _ = layer.out_mask.assign([1.0] * 4 + [0.0] * 4)
    >>> tuple(layer(keras.ops.ones((2, 8, 8, 4))).shape)
    (2, 8, 8, 8)

    Reference: as `ChannelGate`.
    """

    def convolution_op(self, inputs, kernel):
        kernel = masked_kernel(kernel, self.in_mask, self.out_mask)
        return super().convolution_op(inputs, kernel)


@keras.saving.register_keras_serializable(package="tfgraft")
class GatedDense(_MaskedKernel, keras.layers.Dense):
    """`Dense` whose kernel rows are input-masked and norm-rescaled.

    Like `GatedConv2D` with an input mask only: the classifier's outputs
    (the logits) are never pruned. The kernel used is
    `masked_kernel(kernel, in_mask)`; the bias is unchanged.

    Args:
        units: output units, as in `Dense`.
        **kwargs: `Dense` and base layer keyword arguments.

    Call arguments:
        inputs: tensor `(batch, in)`.

    Returns:
        `activation(inputs @ masked_kernel + bias)`.

    Example:

    >>> layer = GatedDense(3)
    >>> tuple(layer(keras.ops.ones((2, 4))).shape)
    (2, 3)

    Reference: as `ChannelGate`.
    """

    _mask_outputs = False

    def call(self, inputs, training=None):
        del training
        kernel = ops.cast(self.masked_kernel(), inputs.dtype)
        x = ops.matmul(inputs, kernel)
        if self.use_bias:
            x = ops.add(x, self.bias)
        if self.activation is not None:
            x = self.activation(x)
        return x


@keras.saving.register_keras_serializable(package="tfgraft")
class FrozenStatsBatchNormalization(FusedBatchNormalization):
    """`BatchNormalization` that never updates its moving statistics.

    In training mode it normalises with the batch's mean and (biased)
    variance, as `BatchNormalization` does, but leaves `moving_mean` and
    `moving_variance` untouched; in inference mode it uses them. EKG
    evaluates hundreds of sub-networks of one shared supernet in training
    mode, and none of them may shift the supernet's statistics.

    It computes as `FusedBatchNormalization` does (about 1.5x faster for
    EKG's forward passes on CPU).

    Args:
        **kwargs: `BatchNormalization` keyword arguments (`renorm` is not
            supported).

    Call arguments:
        inputs: tensor, channels last.
        training: batch statistics when true, moving ones otherwise.

    Returns:
        The normalised tensor.

    Example:

    >>> layer = FrozenStatsBatchNormalization()
    >>> y = layer(keras.ops.ones((2, 8, 8, 4)), training=True)
    >>> float(keras.ops.sum(layer.moving_mean))
    0.0
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.renorm:
            raise ValueError(
                "FrozenStatsBatchNormalization does not support renorm. "
                f"Received: renorm={self.renorm}"
            )

    _update_moving_statistics = False

    def call(self, inputs, training=None, mask=None):
        if self._fused_ok(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        if not (training and self.trainable):
            return keras.layers.BatchNormalization.call(
                self, inputs, training=False, mask=mask
            )
        compute_dtype = keras.backend.result_type(inputs.dtype, "float32")
        x = ops.cast(inputs, compute_dtype)
        mean, variance = self._moments(x, mask)
        gamma = ops.cast(self.gamma, x.dtype) if self.scale else None
        beta = ops.cast(self.beta, x.dtype) if self.center else None
        outputs = ops.batch_normalization(
            x=x,
            mean=mean,
            variance=variance,
            axis=self.axis,
            offset=beta,
            scale=gamma,
            epsilon=self.epsilon,
        )
        return ops.cast(outputs, self.compute_dtype)
