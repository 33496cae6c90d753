"""The widened zoo network with hypernetwork convs and shared latents.

LW-DNA (METHODS.md §4.2) gives every channel group one latent vector: all
convs writing a group (every conv of a residual stream: stem, block-output
convs, projections) share it as their output latent, every conv reading the
group uses it as its input latent, and the model input has a length-3 RGB
vector that is never pruned. The groups come from the channel-dependency
graph (`tfgraft.graph.analyze`) and are named by the zoo's width slots
(`tfgraft.models.layer_slots`), so one latent per `ChannelConfig` slot plus
`"rgb"`. For the zoo ResNets this is the reference's sharing: one vector per
stage stream, ResNet-18/34's stem on the stage-1 vector, ResNet-50's stem on
its own (`stem` slot), one per block-internal conv.
"""

import dataclasses
import functools

import keras

from tfgraft import errors
from tfgraft import graph as graph_lib
from tfgraft import models
from tfgraft.layers.hyper_conv import HyperConv2D
from tfgraft.models import registry

RGB = "rgb"


class LWDNAError(errors.ArgumentError):
    """The model or a setting does not suit LW-DNA; one-line message."""


@dataclasses.dataclass(frozen=True)
class LatentPlan:
    """Which latent vector every layer of a zoo network reads and writes.

    Latent keys are width-slot names plus `RGB` for the model input.

    Attributes:
        model: registry name.
        conv_latents: `{conv name: (input latent, output latent)}` in
            topological order.
        bn_latents: `{BN name: latent of its channels}`.
        classifier: name of the Dense layer producing the logits.
        classifier_latent: latent of the classifier's input channels (the
            last stage's stream in a ResNet).
    """

    model: str
    conv_latents: dict
    bn_latents: dict
    classifier: str
    classifier_latent: str

    def keys(self):
        """Every latent key, `RGB` first, then in topological order."""
        keys = [key for pair in self.conv_latents.values() for key in pair]
        return list(dict.fromkeys([RGB] + keys))


def latent_plan(name, *, preset=None, shortcut=None, input_shape=(32, 32, 3)):
    """Derives the latent sharing of zoo model `name` from its graph.

    Args:
        name: registry name.
        preset: zoo preset (picks the default shortcut).
        shortcut: as in `tfgraft.models.build_model`.
        input_shape: `(height, width, channels)`.

    Returns:
        A `LatentPlan`.

    Raises:
        LWDNAError: the model has depthwise convs, option-A shortcuts or
            another group no mask can prune.
    """
    return _latent_plan(name, preset, shortcut, tuple(input_shape))


@functools.lru_cache(maxsize=None)
def _latent_plan(name, preset, shortcut, input_shape):
    slots = models.layer_slots(
        name, preset=preset, shortcut=shortcut, input_shape=input_shape
    )
    tiny = registry.narrow_model(name, preset, shortcut, input_shape)
    for layer in tiny.layers:
        if isinstance(layer, models.OptionAShortcut):
            raise LWDNAError(
                "LW-DNA needs projection shortcuts: {name} with option-A "
                "shortcuts cannot prune its streams (pass {shortcut} or "
                "{preset}).",
                name=name,
                shortcut="projection",
                preset="dhp",
            )
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            raise LWDNAError(
                "LW-DNA supports regular convs only; {name} has the "
                f"depthwise conv '{layer.name}' (use a ResNet or vgg16).",
                name=name,
            )
    plan = graph_latent_plan(tiny)
    # The graph's latents are named after their group's first conv; the
    # zoo's after that conv's width slot, which every writer must share.
    key = {k: k if k == RGB else slots[k] for k in plan.keys()}
    convs = plan.conv_latents
    if len(set(key.values())) != len(key) or any(
        slots[conv] != key[out] for conv, (_, out) in convs.items()
    ):
        raise LWDNAError(
            "{name}: its width slots are not its channel groups.", name=name
        )
    return LatentPlan(
        model=name,
        conv_latents={
            conv: (key[a], key[b]) for conv, (a, b) in convs.items()
        },
        bn_latents={bn: key[k] for bn, k in plan.bn_latents.items()},
        classifier=plan.classifier,
        classifier_latent=key[plan.classifier_latent],
    )


def graph_latent_plan(model):
    """The latent sharing of any functional CNN, from its channel graph.

    The zoo's `latent_plan` names latents by width slot; a user's model
    has none, so here each channel group of `tfgraft.graph.analyze(model)`
    written by convs gets one latent named after its first producing conv
    (a residual stream: every conv writing it shares it), plus `RGB` for
    the model input. Every `BatchNormalization` uses its channels' latent.

    Args:
        model: functional or built `Sequential` Keras model.

    Returns:
        A `LatentPlan` (`model` is the Keras model's name).

    Raises:
        LWDNAError: the model has depthwise/grouped convs, conv channels
            that mix with unprunable ones (concatenation, the input),
            anything but one `Dense` classifier after global pooling, or a
            BN on channels no conv writes; the message names the layer.
    """
    graph = graph_lib.analyze(model)
    where = f"model '{model.name}'"
    keys = {0: RGB}
    functional = graph_lib.functional_of(model)
    for node in graph.convs():
        op = functional.get_layer(node.name)
        if node.kind != "conv" or getattr(op, "groups", 1) != 1:
            raise LWDNAError(
                f"{where}: LW-DNA supports regular convs only; layer "
                f"'{node.name}' is a depthwise or grouped conv."
            )
        group = graph.groups[node.out_group]
        if not group.prunable:
            raise LWDNAError(
                f"{where}: the channels of layer '{node.name}' cannot be "
                "pruned (they mix with unprunable channels)."
            )
        keys.setdefault(node.out_group, group.producers[0])
    for node in graph.nodes.values():
        if node.in_group not in keys:
            raise LWDNAError(
                f"{where}: layer '{node.name}' reads channels that no conv "
                "writes (a concatenation, a hidden Dense or an unknown "
                "layer); LW-DNA cannot give them a latent."
            )

    bn_latents = {}
    bns = {
        layer.name
        for layer in functional.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    }
    for name in graph.order:
        if name in bns:
            group = graph.layer_groups[name][1]
            if group not in keys:
                raise LWDNAError(
                    f"{where}: BN layer '{name}' normalises channels no conv "
                    "writes."
                )
            bn_latents[name] = keys[group]
    dense = graph.dense()
    if len(dense) != 1 or dense[0].in_spatial != 1:
        raise LWDNAError(
            f"{where}: LW-DNA expects one classifier after global pooling."
        )
    return LatentPlan(
        model=model.name,
        conv_latents={
            n.name: (keys[n.in_group], keys[n.out_group])
            for n in graph.convs()
        },
        bn_latents=bn_latents,
        classifier=dense[0].name,
        classifier_latent=keys[dense[0].in_group],
    )


@dataclasses.dataclass
class HyperNet:
    """A widened zoo network whose convs are `HyperConv2D` layers.

    Attributes:
        model: the functional Keras model (raw images -> logits).
        latents: `{latent key: keras.Variable}`; `RGB` included.
        plan: the `LatentPlan`.
        config: the widened `ChannelConfig` the model was built from.
        build_kwargs: the `build_model` arguments shared with the derived
            plain network (`num_classes`, `input_shape`, `mean`, `std`,
            `preset`, `shortcut`).
    """

    model: keras.Model
    latents: dict
    plan: LatentPlan
    config: models.ChannelConfig
    build_kwargs: dict

    def latent_sizes(self):
        """`{latent key: length}`."""
        return {k: int(v.shape[0]) for k, v in self.latents.items()}


def make_latents(keys, sizes):
    """`{key: N(0, 1) keras.Variable of sizes[key] channels}`, in order."""
    return {
        key: keras.Variable(
            initializer=keras.initializers.RandomNormal(0.0, 1.0),
            shape=(sizes[key],),
            dtype="float32",
            trainable=True,
            name="latent_" + key.replace("/", "_"),
        )
        for key in keys
    }


def hyper_conv(plan, latents, embedding_dim, *, name, **config):
    """The `HyperConv2D` of conv `name` (its Conv2D arguments in `config`)
    on the plan's latents; a kernel initializer is dropped."""
    config.pop("kernel_initializer", None)
    latent_in, latent_out = plan.conv_latents[name]
    return HyperConv2D(
        embedding_dim=embedding_dim,
        latent_in=latents[latent_in],
        latent_out=latents[latent_out],
        name=name,
        **config,
    )


def build_hypernet(
    name,
    *,
    channel_config,
    embedding_dim=8,
    num_classes=10,
    input_shape=(32, 32, 3),
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2023, 0.1994, 0.2010),
    preset="dhp",
    shortcut=None,
    model_name="hypernet",
):
    """Builds the (widened) zoo network `name` with hypernetwork convs.

    Every conv becomes a `HyperConv2D` fed by the plan's shared latents
    (N(0, 1) `keras.Variable`s created here, so call this inside the
    strategy scope that trains the network). BN, pooling and the classifier
    are the zoo's own layers.

    Args:
        name: registry name.
        channel_config: the widened `ChannelConfig` (e.g.
            `default_channel_config(name).scaled(2)`).
        embedding_dim: hypernetwork embedding dimension.
        num_classes, input_shape, mean, std, shortcut: as in
            `tfgraft.models.build_model` (`shortcut` must not be `"A"`).
        preset: zoo preset (padding, BN and classifier init); `"dhp"` is
            the reference's.
        model_name: Keras model name.

    Returns:
        A `HyperNet`.

    Example:

    >>> config = models.default_channel_config("resnet20").scaled(0.5)
    >>> net = build_hypernet("resnet20", channel_config=config)
    >>> net.latent_sizes()["stage3"], net.plan.classifier_latent
    (32, 'stage3')
    """
    plan = latent_plan(
        name, preset=preset, shortcut=shortcut, input_shape=input_shape
    )
    widths = dict(channel_config.widths)
    widths[RGB] = int(input_shape[-1])
    latents = make_latents(plan.keys(), widths)
    conv_layer = functools.partial(hyper_conv, plan, latents, embedding_dim)
    build_kwargs = dict(
        num_classes=num_classes,
        input_shape=tuple(input_shape),
        mean=tuple(mean),
        std=tuple(std),
        preset=preset,
        shortcut=shortcut,
    )
    model = models.build_model(
        name,
        channel_config=channel_config,
        conv_layer=conv_layer,
        model_name=model_name,
        **build_kwargs,
    )
    return HyperNet(model, latents, plan, channel_config, build_kwargs)
