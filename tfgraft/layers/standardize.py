"""Standardize: per-channel (x / 255 - mean) / std inside the model."""

import keras
from keras import ops

from tfgraft.layers.own_variables import OwnConfigMixin


@keras.saving.register_keras_serializable(package="tfgraft")
class Standardize(OwnConfigMixin, keras.layers.Layer):
    """Maps raw 0-255 RGB images to per-channel standardised values.

    Every tfgraft model starts with this layer, so the pipelines feed raw
    pixel values (augmented, zero-padded in pixel space as torchvision does)
    and an exported SavedModel serves raw images without tfgraft. The layer
    has no weights: grafting, pruning and surgery never see it.

    The statistics are on the 0-1 scale while the input is on the 0-255
    scale, as torchvision's `Normalize` after `ToTensor` and as datasets
    publish them; unlike `keras.layers.Normalization`, whose statistics
    are on the scale of its input. Statistics measured on 0-255 pixels
    (`mean=[125.3, 123.0, 113.9]`) would be silently wrong here, so the
    layer refuses any mean outside [0, 1] and any std outside (0, 1]:
    divide such statistics by 255 first.

    Args:
        mean: per-channel mean on the 0-1 scale, each in [0, 1], e.g.
            CIFAR's `(0.4914, 0.4822, 0.4465)`.
        std: per-channel standard deviation on the 0-1 scale, each in
            (0, 1].
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: float or integer tensor `(batch, height, width, channels)`
            on the 0-255 scale.

    Returns:
        `(inputs / 255 - mean) / std` in the layer's compute dtype.

    Example:

    >>> layer = Standardize(mean=(0.5, 0.5, 0.5, 0.5), std=(0.25,) * 4)
    >>> tuple(layer(keras.ops.zeros((2, 8, 8, 4))).shape)
    (2, 8, 8, 4)
    """

    _config_attributes = ("mean", "std")

    def __init__(self, mean, std, **kwargs):
        super().__init__(**kwargs)
        mean = tuple(float(m) for m in mean)
        std = tuple(float(s) for s in std)
        where = f"Standardize '{self.name}'"
        if len(mean) != len(std):
            raise ValueError(
                f"{where} needs one std per mean. "
                f"Received: mean={mean}, std={std}"
            )
        # `not 0 <= m <= 1` also refuses NaN.
        if not all(0.0 <= m <= 1.0 for m in mean):
            raise ValueError(
                f"{where}: mean={mean}: each must be in [0, 1] (the 0-1 "
                "scale; the layer divides its 0-255 input by 255 first)"
            )
        if not all(0.0 < s <= 1.0 for s in std):
            raise ValueError(
                f"{where}: std={std}: each must be in (0, 1] (the 0-1 "
                "scale; the layer divides its 0-255 input by 255 first)"
            )
        self.mean = mean
        self.std = std

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        # One multiply-add: x * scale + shift == (x / 255 - mean) / std.
        scale = ops.convert_to_tensor(
            [1.0 / (255.0 * s) for s in self.std], self.compute_dtype
        )
        shift = ops.convert_to_tensor(
            [-m / s for m, s in zip(self.mean, self.std)], self.compute_dtype
        )
        return x * scale + shift

    def compute_output_shape(self, input_shape):
        return input_shape
