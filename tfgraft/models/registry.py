"""Model registry: build any zoo network by name, preset and channel config.

Names: `resnet20`, `resnet32`, `resnet44`, `resnet56`, `resnet110` (CIFAR
ResNets, `resnet_cifar.py`), `resnet20_leaky` ... `resnet110_leaky` (the
same with leaky ReLU, negative slope 0.01), `vgg16` (CIFAR VGG16,
`vgg_cifar.py`), `mobilenetv2` (CIFAR MobileNetV2,
`mobilenet_v2_cifar.py`), `resnet18`, `resnet34`, `resnet50` (ImageNet,
torchvision topology, `resnet_imagenet.py`). Each architecture module
documents its width slots and layer names; presets are described in
`common.py`.

Every model is a functional Keras model: `Input` named `images` (raw 0-255
pixels), then `Standardize(mean, std)` named `standardize`, then the network,
ending in the Dense `fc` that returns logits. Layer names depend only on
the model name, shortcut type and preset (symmetric presets add `*_pad`
layers), never on the widths, so weights move between a network and its
pruned or widened configs by name.

Example:

>>> model = build_model("resnet20", width_mult=0.25)
>>> model.layers[1].name, model.output_shape
('standardize', (None, 10))
"""

import dataclasses
import functools
import types

import keras

from tfgraft import errors
from tfgraft.layers.standardize import Standardize
from tfgraft.models import common
from tfgraft.models import mobilenet_v2_cifar
from tfgraft.models import resnet_cifar
from tfgraft.models import resnet_imagenet
from tfgraft.models import vgg_cifar
from tfgraft.models.channel_config import ChannelConfig


class UnknownModelError(errors.ArgumentError):
    """A model name is not in the registry; lists the choices."""


@dataclasses.dataclass(frozen=True)
class _Entry:
    module: types.ModuleType
    family: str
    activation: str = common.RELU


_MODELS = {
    **{
        name + suffix: _Entry(resnet_cifar, common.RESNET_CIFAR, activation)
        for suffix, activation in (
            ("", common.RELU),
            (resnet_cifar.LEAKY_SUFFIX, common.LEAKY_RELU),
        )
        for name in resnet_cifar.BLOCKS_PER_STAGE
    },
    "vgg16": _Entry(vgg_cifar, common.VGG),
    "mobilenetv2": _Entry(mobilenet_v2_cifar, common.MOBILENET_V2),
    **{
        name: _Entry(resnet_imagenet, common.RESNET_IMAGENET)
        for name in resnet_imagenet.SPECS
    },
}


def available_models():
    """Returns the registry names, CIFAR models first."""
    return list(_MODELS)


def model_family(name):
    """Returns the architecture family of `name` (`common.FAMILIES`)."""
    return _entry(name).family


def _entry(name):
    if name not in _MODELS:
        raise UnknownModelError(
            "{name}: unknown model; choose one of " + ", ".join(_MODELS),
            name=name,
        )
    return _MODELS[name]


def _resolve_shortcut(name, family, preset, shortcut):
    if family in (common.VGG, common.MOBILENET_V2):
        if shortcut is not None:
            raise errors.ArgumentError(
                "{shortcut}: shortcut types apply to ResNets only, not to "
                "{name}",
                shortcut=shortcut,
                name=name,
            )
        return None
    if shortcut is None:
        return common.default_shortcut(preset, family)
    if shortcut not in common.SHORTCUTS:
        raise errors.ArgumentError(
            "{shortcut}: must be one of " + ", ".join(common.SHORTCUTS),
            shortcut=shortcut,
        )
    if shortcut == "A" and family != common.RESNET_CIFAR:
        raise errors.ArgumentError(
            "{shortcut} exists for CIFAR ResNets only; {name} uses "
            "projection shortcuts",
            shortcut=shortcut,
            name=name,
        )
    return shortcut


def resolve_topology(name, preset=None, shortcut=None):
    """Returns `(preset, shortcut)` as `build_model` resolves them.

    `ChannelConfig.with_topology` records these values, so a derived config
    names the network it fits even where the caller left defaults.

    Args:
        name: registry name.
        preset: as in `build_model` (None: `"grafting"`).
        shortcut: as in `build_model` (None: the preset's default; always
            None for models without shortcuts).
    """
    entry = _entry(name)
    preset = common.check_preset(preset)
    return preset, _resolve_shortcut(name, entry.family, preset, shortcut)


def model_channel_config(model, scaled=True):
    """The `ChannelConfig` a `config.ModelConfig` describes.

    Its `channel_config` file if set, else the zoo's reference widths;
    scaled by its `width_mult` unless `scaled` is False.
    """
    if model.channel_config:
        config = ChannelConfig.load(model.channel_config)
    else:
        config = default_channel_config(model.name)
    if scaled and model.width_mult != 1.0:
        config = config.scaled(model.width_mult)
    return config


def default_channel_config(name, width_mult=1.0, shortcut=None):
    """Returns the reference widths of `name`, scaled by `width_mult`.

    Args:
        name: registry name.
        width_mult: multiplier applied to every slot (rounded, >= 1).
        shortcut: `"A"`, `"projection"` or None; only checked, since the
            slots are the same for both shortcut types.

    Returns:
        A `ChannelConfig`.
    """
    entry = _entry(name)
    if shortcut is not None:
        _resolve_shortcut(name, entry.family, None, shortcut)
    config = ChannelConfig(name, entry.module.default_widths(name))
    if width_mult != 1.0:
        config = config.scaled(width_mult)
    return config


def build_model(
    name,
    *,
    num_classes=10,
    input_shape=(32, 32, 3),
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2023, 0.1994, 0.2010),
    width_mult=1.0,
    channel_config=None,
    preset=None,
    shortcut=None,
    conv_layer=None,
    model_name=None,
    slots=None,
):
    """Builds a zoo network as a functional Keras model.

    Args:
        name: registry name (see `available_models()`).
        num_classes: classifier outputs.
        input_shape: `(height, width, channels)` of the raw images.
        mean: per-channel mean (0-1 scale) for the `Standardize` layer.
        std: per-channel std (0-1 scale) for the `Standardize` layer.
        width_mult: scales every width of the (given or default) config.
        channel_config: a `ChannelConfig` for `name`; default: reference.
        preset: `"grafting"` (default), `"pff"`, `"ekg"` or `"dhp"`.
        shortcut: CIFAR ResNets: `"A"` (default under `grafting`) or
            `"projection"` (default otherwise); ImageNet ResNets:
            `"projection"` only; must be None for VGG and MobileNetV2.
        conv_layer: optional factory for the regular convs (see
            `common.LayerBuilder`), e.g. a `keras.layers.Conv2D` subclass.
        model_name: Keras model name; default `name`.
        slots: optional dict, filled with `{layer name: width slot}` of
            every conv, depthwise conv and BN (see `layer_slots`).

    Returns:
        A `keras.Model` mapping raw images to logits.

    Raises:
        UnknownModelError: `name` is not registered.
        ChannelConfigError: the config does not fit the model.
        ValueError: bad preset, shortcut, shapes or width_mult.
    """
    entry = _entry(name)
    preset, shortcut = resolve_topology(name, preset, shortcut)
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(
            f"num_classes must be a positive int. Received: "
            f"num_classes={num_classes}"
        )
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] != len(mean):
        raise ValueError(
            "input_shape must be (height, width, channels) with one mean "
            f"per channel. Received: input_shape={input_shape}, mean={mean}"
        )

    # === Config ===
    if channel_config is None:
        config = default_channel_config(name)
    elif isinstance(channel_config, ChannelConfig):
        config = channel_config
    else:
        raise TypeError(
            "channel_config must be a ChannelConfig (use "
            "ChannelConfig.load(path) for files). "
            f"Received: {type(channel_config).__name__}"
        )
    if width_mult != 1.0:
        config = config.scaled(width_mult)
    if config.model == name:
        config.check_topology(preset, shortcut)
    config.check_slots(name, entry.module.default_widths(name))
    if shortcut == "A":
        resnet_cifar.check_option_a(config)

    # === Layers ===
    builder = common.LayerBuilder(
        common.resolve_settings(preset, entry.family),
        conv_layer,
        activation=entry.activation,
    )
    inputs = keras.Input(shape=input_shape, name="images")
    x = Standardize(mean, std, name="standardize")(inputs)
    logits = entry.module.build(
        builder, x, config.widths, name, shortcut, int(num_classes)
    )
    if slots is not None:
        slots.update(builder.slots)
    return keras.Model(inputs, logits, name=model_name or name)


def layer_slots(name, *, preset=None, shortcut=None, input_shape=(32, 32, 3)):
    """Maps each conv, depthwise conv and BN layer name to its width slot.

    The slot of a layer is the slot whose width is the layer's output
    channel count. These names are the same for every config and preset
    of `name` (only the shortcut type adds or removes projections), so one
    call serves them all. Builds one very narrow network per shortcut type
    and caches the answer.

    Args:
        name: registry name.
        preset: only used to pick the default shortcut.
        shortcut: as in `build_model`.
        input_shape: `(height, width, channels)`.

    Returns:
        A new dict `{layer_name: slot}`.
    """
    _, shortcut = resolve_topology(name, preset, shortcut)
    return dict(_layer_slots(name, shortcut, tuple(input_shape)))


@functools.lru_cache(maxsize=None)
def _layer_slots(name, shortcut, input_shape):
    slots = {}
    narrow_model(name, None, shortcut, input_shape, slots=slots)
    return slots


def narrow_model(name, preset, shortcut, input_shape, slots=None):
    """A very narrow `name` network (10 classes; `slots` as `build_model`).

    Layer names, slots and channel groups do not depend on the widths, and
    a narrow network builds and analyses fast.
    """
    mean = (0.5,) * input_shape[-1]
    return build_model(
        name,
        input_shape=input_shape,
        mean=mean,
        std=mean,
        width_mult=1.0 / 64.0,
        preset=preset,
        shortcut=shortcut,
        slots=slots,
    )
