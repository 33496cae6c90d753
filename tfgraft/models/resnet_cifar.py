"""CIFAR ResNet-20/32/44/56/110 (He et al.) on explicit channel configs.

Registry names `resnet{20,32,44,56,110}` and their leaky-ReLU twins
`resnet{20,32,44,56,110}_leaky` (see `common`), which share slots, layer
names and weights layout; only the activation layers' type differs.

Topology (METHODS.md §1.4, §2.3, §3.6, §4.4): conv3x3 stem + BN + ReLU; three
stages of n BasicBlocks (n = (depth - 2) / 6) with stride 2 in the first
block of stages 2 and 3; block = conv3x3-BN-ReLU-conv3x3-BN, plus shortcut,
then ReLU; global average pooling; FC. The shortcut of a strided block is
option A (subsample + zero channels, no weights) or a 1x1 conv (stride 2) +
BN projection; every other block has an identity shortcut. The topology is
fixed by the model name and shortcut type, never by the widths, so pruned
configs keep every layer name.

Width slots:

* `stage1`, `stage2`, `stage3`: the residual stream of each stage. The stem
  conv writes `stage1`; every block's conv2 (and the projection) writes its
  stage's stream.
* `stage{s}/block{b}/conv1` (s = 1..3, b = 0..n-1): each block's inner
  width.

With option A the zero padding can only widen the stream, so a config needs
`stage2 >= stage1` and `stage3 >= stage2` (the reference doubles it).
Projection shortcuts allow any widths.

Layer names: `stem_conv`, `stem_bn`, `stem_relu`; per block, with prefix
`stage{s}_block{b}`: `_conv1`, `_bn1`, `_relu1`, `_conv2`, `_bn2`,
`_shortcut` (option A) or `_shortcut_conv` + `_shortcut_bn`, `_add`, `_out`
(the closing ReLU); strided convs under symmetric padding are preceded by
`<conv name>_pad`; then `pool`, `fc`.
"""

import keras

from tfgraft.models import common
from tfgraft.models.channel_config import ChannelConfigError
from tfgraft.models.channel_config import describe_source

BLOCKS_PER_STAGE = {
    "resnet20": 3,
    "resnet32": 5,
    "resnet44": 7,
    "resnet56": 9,
    "resnet110": 18,
}
STREAM_WIDTHS = (16, 32, 64)
# Suffix of the leaky-ReLU twins; the registry gives them
# `activation="leaky_relu"` (the builder creates the activations).
LEAKY_SUFFIX = "_leaky"


def _blocks(name):
    return BLOCKS_PER_STAGE[name.removesuffix(LEAKY_SUFFIX)]


def default_widths(name):
    """Returns the reference widths of `name` as a slot -> width dict."""
    n = _blocks(name)
    widths = {}
    for s, width in enumerate(STREAM_WIDTHS, start=1):
        widths[f"stage{s}"] = width
        for b in range(n):
            widths[f"stage{s}/block{b}/conv1"] = width
    return widths


def check_option_a(config):
    """Raises `ChannelConfigError` unless option A can widen every stream."""
    for s in (2, 3):
        prev, cur = config.widths[f"stage{s - 1}"], config.widths[f"stage{s}"]
        if cur < prev:
            raise ChannelConfigError(
                f"{describe_source(config.source)}: slot 'stage{s}' = {cur} "
                f"is narrower than 'stage{s - 1}' = {prev}; option-A "
                "shortcuts can only zero-pad the stream wider (use "
                "{shortcut} for such widths).",
                shortcut="projection",
            )


def build(builder, x, widths, name, shortcut, num_classes):
    """Builds the network on tensor `x`; returns the logits tensor."""
    n = _blocks(name)
    x = builder.conv_bn(
        x, widths["stage1"], 3, 1, "stem_{}", slot="stage1", relu=True
    )
    for s in range(1, len(STREAM_WIDTHS) + 1):
        stream = f"stage{s}"
        out = widths[stream]
        for b in range(n):
            strides = 2 if (s > 1 and b == 0) else 1
            prefix, inner = f"{stream}_block{b}", f"{stream}/block{b}/conv1"
            y = builder.basic_branch(
                x, widths[inner], out, strides, prefix, slots=(inner, stream)
            )
            if strides == 1:
                residual = x
            elif shortcut == "A":
                residual = common.OptionAShortcut(
                    out, strides, name=f"{prefix}_shortcut"
                )(x)
            else:
                residual = builder.projection(
                    x, out, strides, prefix, slot=stream
                )
            x = builder.residual(y, residual, prefix)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return builder.classifier(x, num_classes)
