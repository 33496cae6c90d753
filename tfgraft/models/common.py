"""Shared pieces of the model zoo: presets, the conv+BN builder, option A.

Every zoo network is assembled by a `LayerBuilder`, which owns the choices
that differ between the four reference implementations (METHODS.md §0, §1.4,
§2.3, §3.6, §4.4) so that the architecture files only describe topology:

* `grafting` (default): symmetric `k // 2` padding (PyTorch); init per
  family, see below; conv bias on VGG only; BN gamma 1.
* `pff`: symmetric padding; PyTorch default conv init, no conv bias; every BN
  gamma 0.5; FC weight N(0, 0.01), PyTorch default FC bias.
* `ekg`: TF native `"same"` padding; convs VarianceScaling(2, fan_out,
  truncated normal), no bias; BN gamma 1 except the BN closing each residual
  branch (gamma 0); FC weight N(0, 0.01), zero bias.
* `dhp`: symmetric padding; He normal fan_out convs (torchvision), no bias;
  BN gamma 1; PyTorch default FC.

Under `grafting` the init follows each reference model file: CIFAR ResNets
use He normal fan_in for conv and FC weights (PyTorch default FC bias), VGG16
and MobileNetV2 keep PyTorch's default U(±1/sqrt(fan_in)) for weights and
biases, ImageNet ResNets use torchvision's He normal fan_out. Every BN is
`FusedBatchNormalization(momentum=0.9, epsilon=1e-5)` (PyTorch momentum
0.1; Keras's BN computed by TF's fused kernel, see `tfgraft.layers`).

The activation is a property of the model, not of the preset: every zoo
network uses ReLU except the CIFAR ResNets' `_leaky` variants (grafting
README's leaky-ReLU rows, the reference's `resnet_leaky.py`), which use a
leaky ReLU with negative slope `LEAKY_RELU_SLOPE` = 0.01 everywhere
(`F.leaky_relu`'s default, METHODS.md §1.4). `LayerBuilder.activate` makes
either.

PyTorch pads `k // 2` on every side. TF's `"same"` equals that at stride 1
for odd kernels but pads only bottom/right at stride 2, shifting the
sampling grid by one pixel; the symmetric presets therefore put an explicit
`ZeroPadding2D(k // 2)` (named `<conv>_pad`) before a `"valid"` strided conv.
"""

import dataclasses

import keras
from keras import ops

from tfgraft import errors
from tfgraft.layers import batch_norm as bn_lib
from tfgraft.layers.own_variables import OwnConfigMixin

PRESETS = ("grafting", "pff", "ekg", "dhp")
SHORTCUTS = ("A", "projection")

# Architecture families: presets resolve differently per family.
RESNET_CIFAR = "resnet_cifar"
VGG = "vgg"
MOBILENET_V2 = "mobilenetv2"
RESNET_IMAGENET = "resnet_imagenet"
FAMILIES = (RESNET_CIFAR, VGG, MOBILENET_V2, RESNET_IMAGENET)

# Initializer kinds (see `make_kernel_initializer`).
HE_FAN_IN = "he_normal_fan_in"
HE_FAN_OUT = "he_normal_fan_out"
TORCH_DEFAULT = "torch_default"
EKG_CONV = "ekg_conv"
NORMAL_001 = "normal_0.01"
ZEROS = "zeros"

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

# Activations (see `LayerBuilder.activate`).
RELU = "relu"
LEAKY_RELU = "leaky_relu"
ACTIVATIONS = (RELU, LEAKY_RELU)
# PyTorch's `F.leaky_relu` / `nn.LeakyReLU` default, which the reference's
# `resnet_leaky.py` uses (Keras's `LeakyReLU` defaults to 0.3).
LEAKY_RELU_SLOPE = 0.01


@dataclasses.dataclass(frozen=True)
class LayerSettings:
    """Per-preset, per-family layer choices (see the module docstring).

    Args:
        preset: preset name, one of `PRESETS`.
        conv_init: kernel initializer kind of convs (also depthwise).
        conv_bias: whether convs have a bias.
        fc_init: classifier kernel initializer kind.
        symmetric_padding: PyTorch-style `k // 2` padding at stride > 1.
        conv_bias_init: bias initializer kind when `conv_bias`.
        bn_gamma: initial BN gamma.
        zero_init_last_bn: start the BN closing a residual branch at 0.
        fc_bias_init: classifier bias initializer kind.
        torch_fans: initializer fans follow PyTorch's layout; matters only
            for depthwise kernels, whose Keras fans are swapped.
    """

    preset: str
    conv_init: str
    conv_bias: bool
    fc_init: str
    symmetric_padding: bool = True
    conv_bias_init: str = TORCH_DEFAULT
    bn_gamma: float = 1.0
    zero_init_last_bn: bool = False
    fc_bias_init: str = TORCH_DEFAULT
    torch_fans: bool = True


def check_preset(preset):
    """Returns `preset` (None means "grafting") or raises ValueError."""
    if preset is None:
        return "grafting"
    if preset not in PRESETS:
        raise errors.ArgumentError(
            "{preset}: must be one of " + ", ".join(PRESETS), preset=preset
        )
    return preset


def resolve_settings(preset, family):
    """Returns the `LayerSettings` of `preset` for an architecture family."""
    preset = check_preset(preset)
    if family not in FAMILIES:
        raise ValueError(f"Unknown model family. Received: family={family}")
    if preset == "ekg":
        return LayerSettings(
            preset,
            conv_init=EKG_CONV,
            conv_bias=False,
            fc_init=NORMAL_001,
            symmetric_padding=False,
            conv_bias_init=ZEROS,
            zero_init_last_bn=True,
            fc_bias_init=ZEROS,
            torch_fans=False,
        )
    if preset == "pff":
        return LayerSettings(
            preset,
            conv_init=TORCH_DEFAULT,
            conv_bias=False,
            fc_init=NORMAL_001,
            conv_bias_init=ZEROS,
            bn_gamma=0.5,
        )
    if preset == "dhp" or family == RESNET_IMAGENET:
        return LayerSettings(preset, HE_FAN_OUT, False, TORCH_DEFAULT)
    if family == RESNET_CIFAR:
        return LayerSettings(preset, HE_FAN_IN, False, HE_FAN_IN)
    # VGG16 / MobileNetV2 in the grafting repo keep PyTorch's defaults; only
    # the VGG convs carry a bias.
    return LayerSettings(preset, TORCH_DEFAULT, family == VGG, TORCH_DEFAULT)


def default_shortcut(preset, family):
    """Returns the reference shortcut of a ResNet family under `preset`."""
    if family == RESNET_CIFAR and check_preset(preset) == "grafting":
        return "A"
    return "projection"


# === Initializers ===


def make_kernel_initializer(kind, depthwise=False, torch_fans=True):
    """Returns a fresh kernel initializer of the given kind.

    PyTorch computes a depthwise kernel's fans from its (C, 1, k, k) weight
    (fan_in = k*k), Keras from its (k, k, C, 1) kernel (fan_in = k*k*C): the
    two are swapped, so for PyTorch-derived presets the mode is swapped too.
    """
    fan_in, fan_out = "fan_in", "fan_out"
    if depthwise and torch_fans:
        fan_in, fan_out = fan_out, fan_in
    if kind == NORMAL_001:
        return keras.initializers.RandomNormal(mean=0.0, stddev=0.01)
    variance_scaling = {
        HE_FAN_IN: (2.0, fan_in, "untruncated_normal"),
        HE_FAN_OUT: (2.0, fan_out, "untruncated_normal"),
        # U(±sqrt(3 * scale / fan_in)) = U(±1/sqrt(fan_in)) for scale 1/3,
        # which is what kaiming_uniform_(a=sqrt(5)) works out to.
        TORCH_DEFAULT: (1.0 / 3.0, fan_in, "uniform"),
        EKG_CONV: (2.0, "fan_out", "truncated_normal"),
    }
    if kind in variance_scaling:
        return keras.initializers.VarianceScaling(*variance_scaling[kind])
    raise ValueError(f"Unknown kernel initializer. Received: kind={kind}")


def make_bias_initializer(kind, fan_in):
    """Returns a bias initializer; `TORCH_DEFAULT` is U(±1/sqrt(fan_in))."""
    if kind == ZEROS:
        return keras.initializers.Zeros()
    if kind == TORCH_DEFAULT:
        bound = 1.0 / float(fan_in) ** 0.5
        return keras.initializers.RandomUniform(minval=-bound, maxval=bound)
    raise ValueError(f"Unknown bias initializer. Received: kind={kind}")


# === Option-A shortcut ===


@keras.saving.register_keras_serializable(package="tfgraft")
class OptionAShortcut(OwnConfigMixin, keras.layers.Layer):
    """Parameter-free ResNet shortcut: subsample, then zero-pad channels.

    Option A of He et al. for CIFAR: `x[:, ::s, ::s, :]` followed by zero
    channels so the output has `filters` channels. The reference pads
    `planes // 4` channels on each side of a stream that doubles; for any
    `filters >= in_channels` this layer pads `(filters - in) // 2` channels
    in front and the rest behind, which is the same thing when the width
    doubles and still adds up for other (pruned or scaled) widths.

    Args:
        filters: output channels, at least the input channels.
        strides: spatial subsampling step (the block's conv stride).
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: tensor `(batch, height, width, in_channels)`.

    Returns:
        Tensor `(batch, ceil(height / strides), ceil(width / strides),
        filters)`.

    Example:

    >>> layer = OptionAShortcut(filters=8, strides=2)
    >>> tuple(layer(keras.ops.ones((2, 8, 8, 4))).shape)
    (2, 4, 4, 8)

    Reference:
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
    """

    _config_attributes = ("filters", "strides")

    def __init__(self, filters, strides=2, **kwargs):
        super().__init__(**kwargs)
        sizes = errors.positive_ints(
            "OptionAShortcut", filters=filters, strides=strides
        )
        self.filters, self.strides = sizes["filters"], sizes["strides"]

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is not None and channels > self.filters:
            raise ValueError(
                f"OptionAShortcut '{self.name}' cannot zero-pad {channels} "
                f"channels down to {self.filters}. "
                f"Received: filters={self.filters}"
            )

    def call(self, inputs):
        s = self.strides
        x = inputs[:, ::s, ::s, :]
        extra = self.filters - inputs.shape[-1]
        before = extra // 2
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [before, extra - before]])

    def compute_output_shape(self, input_shape):
        def sub(size):
            return None if size is None else -(-size // self.strides)

        return (input_shape[0], *map(sub, input_shape[1:3]), self.filters)


# === Builder ===


class LayerBuilder:
    """Creates the zoo's layers with one preset's choices and records slots.

    Args:
        settings: the `LayerSettings` to build with.
        conv_layer: optional factory for regular (non-depthwise) convs,
            called as `conv_layer(filters=, kernel_size=, strides=,
            padding=, use_bias=, kernel_initializer=, name=)` plus
            `bias_initializer=` when `use_bias` is true; it must return a
            Keras layer. Defaults to `keras.layers.Conv2D`.
        activation: `"relu"` (default) or `"leaky_relu"` (negative slope
            `LEAKY_RELU_SLOPE`), the nonlinearity `activate` creates.

    Attributes:
        slots: dict from the name of every conv, depthwise conv and BN to
            the width slot of its output channels, filled while building.
    """

    def __init__(self, settings, conv_layer=None, activation=RELU):
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"Unknown activation. Choose one of: {', '.join(ACTIVATIONS)}."
                f" Received: activation={activation!r}"
            )
        self.settings = settings
        self.conv_layer = conv_layer or keras.layers.Conv2D
        self.activation = activation
        self.slots = {}

    def conv(self, x, filters, kernel_size, strides, *, name, slot):
        """Applies (padding +) a regular conv writing `filters` channels."""
        return self._conv(x, kernel_size, strides, name, slot, filters)

    def depthwise_conv(self, x, kernel_size, strides, *, name, slot):
        """Applies (padding +) a depthwise conv with depth multiplier 1."""
        return self._conv(x, kernel_size, strides, name, slot)

    def _conv(self, x, kernel_size, strides, name, slot, filters=None):
        s = self.settings
        padding = "same"
        if s.symmetric_padding and strides > 1:
            padding = "valid"
            if kernel_size // 2:
                x = keras.layers.ZeroPadding2D(
                    kernel_size // 2, name=f"{name}_pad"
                )(x)
        kwargs = dict(
            kernel_size=kernel_size,
            strides=strides,
            padding=padding,
            use_bias=s.conv_bias,
            name=name,
        )
        init = make_kernel_initializer(
            s.conv_init, depthwise=filters is None, torch_fans=s.torch_fans
        )
        fan_in = kernel_size * kernel_size
        if filters is None:
            layer = keras.layers.DepthwiseConv2D
            kwargs.update(depth_multiplier=1, depthwise_initializer=init)
        else:
            layer = self.conv_layer
            kwargs.update(filters=filters, kernel_initializer=init)
            fan_in *= x.shape[-1]
        if s.conv_bias:
            kwargs["bias_initializer"] = make_bias_initializer(
                s.conv_bias_init, fan_in
            )
        self.slots[name] = slot
        return layer(**kwargs)(x)

    def batch_norm(self, x, *, name, slot, last=False):
        """Applies BN; `last` marks the BN closing a residual branch."""
        s = self.settings
        gamma = 0.0 if (last and s.zero_init_last_bn) else s.bn_gamma
        self.slots[name] = slot
        return bn_lib.FusedBatchNormalization(
            momentum=BN_MOMENTUM,
            epsilon=BN_EPSILON,
            gamma_initializer=keras.initializers.Constant(gamma),
            name=name,
        )(x)

    def conv_bn(
        self,
        x,
        filters,
        kernel_size,
        strides,
        names,
        *,
        slot,
        relu=False,
        last=False,
    ):
        """Conv -> BN (-> activation when `relu`), named from a template.

        `names.format(kind)` names the layers, kind `conv`, `bn` and `relu`
        (`"stem_{}"`: `stem_conv`, `stem_bn`, `stem_relu`); `last` marks
        the BN closing a residual branch.
        """
        name = names.format
        x = self.conv(
            x, filters, kernel_size, strides, name=name("conv"), slot=slot
        )
        x = self.batch_norm(x, name=name("bn"), slot=slot, last=last)
        return self.activate(x, name=name("relu")) if relu else x

    def basic_branch(self, x, inner, out, strides, prefix, *, slots):
        """ResNet BasicBlock branch: conv3x3 (stride)-BN-act-conv3x3-BN.

        Layers `{prefix}_conv1`, `_bn1`, `_relu1`, `_conv2`, `_bn2`;
        `slots` is `(inner slot, stream slot)`.
        """
        y = self.conv_bn(
            x, inner, 3, strides, f"{prefix}_{{}}1", slot=slots[0], relu=True
        )
        return self.conv_bn(
            y, out, 3, 1, f"{prefix}_{{}}2", slot=slots[1], last=True
        )

    def projection(self, x, filters, strides, prefix, *, slot):
        """1x1 conv + BN shortcut: `{prefix}_shortcut_conv`, `_bn`."""
        return self.conv_bn(
            x, filters, 1, strides, f"{prefix}_shortcut_{{}}", slot=slot
        )

    def residual(self, y, shortcut, prefix, *, activate=True):
        """`{prefix}_add` of branch and shortcut, then `{prefix}_out`."""
        x = keras.layers.Add(name=f"{prefix}_add")([y, shortcut])
        return self.activate(x, name=f"{prefix}_out") if activate else x

    def activate(self, x, *, name):
        """Applies the builder's activation as a layer named `name`.

        `keras.layers.ReLU` or `keras.layers.LeakyReLU(LEAKY_RELU_SLOPE)`;
        the name is the same for both, so a `_leaky` model has the layer
        names of its ReLU twin.
        """
        if self.activation == LEAKY_RELU:
            return keras.layers.LeakyReLU(
                negative_slope=LEAKY_RELU_SLOPE, name=name
            )(x)
        return keras.layers.ReLU(name=name)(x)

    def max_pool(self, x, pool_size, strides, *, name):
        """Max-pool with PyTorch's `padding=pool_size // 2` when symmetric."""
        padding = "same"
        if self.settings.symmetric_padding:
            # Zero padding stands in for PyTorch's -inf padding: the input
            # follows a ReLU, so a zero never exceeds a real value. After a
            # leaky ReLU it could, hence the check.
            if self.activation != RELU:
                raise ValueError(
                    "max_pool pads with zeros, which equals PyTorch's -inf "
                    "padding only after a ReLU. Received: "
                    f"activation={self.activation!r}"
                )
            pad = keras.layers.ZeroPadding2D(pool_size // 2, name=f"{name}_pad")
            x = pad(x)
            padding = "valid"
        return keras.layers.MaxPooling2D(
            pool_size, strides, padding=padding, name=name
        )(x)

    def classifier(self, x, units, *, name="fc"):
        """The final Dense layer with the preset's init."""
        s = self.settings
        return keras.layers.Dense(
            units,
            kernel_initializer=make_kernel_initializer(s.fc_init),
            bias_initializer=make_bias_initializer(s.fc_bias_init, x.shape[-1]),
            name=name,
        )(x)


def surgery_weights(layer):
    """`layer`'s weights in the order model surgery slices and assigns them.

    Conv/Dense: kernel (and bias); BN: gamma and beta where present, then
    the moving mean and variance; other layers: `layer.weights`. Pruned
    copies (EKG extraction, L1 filter pruning) fill a new layer in this
    order.
    """
    if isinstance(layer, keras.layers.BatchNormalization):
        stats = (layer.moving_mean, layer.moving_variance)
        return [w for w in (layer.gamma, layer.beta, *stats) if w is not None]
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
        return [layer.kernel] + ([layer.bias] if layer.use_bias else [])
    return list(layer.weights)
