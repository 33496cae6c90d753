"""ImageNet ResNet-18/34/50 (torchvision topology) on explicit channel configs.

Topology (METHODS.md §1.4, §3.6, §4.4): conv7x7/2 (64) + BN + ReLU + max-pool
3/2; four stages with planes 64/128/256/512 and strides 1/2/2/2; ResNet-18/34
stack BasicBlocks ([2,2,2,2] / [3,4,6,3]: conv3x3 (stride)-BN-ReLU-conv3x3-BN),
ResNet-50 stacks Bottlenecks ([3,4,6,3]: conv1x1-BN-ReLU-conv3x3 (stride)-
BN-ReLU-conv1x1 (4 x planes)-BN, the "v1.5" stride placement); shortcut =
1x1 conv (stride) + BN where torchvision has a downsample (the first block of
every stage whose stride or width changes), identity elsewhere; add, ReLU;
global average pooling; FC. The projection placement is fixed by the model
name, never by the widths.

Width slots:

* `stage1` ... `stage4`: each stage's residual stream, written by every
  block's last conv and by the projection. In ResNet-18/34 the stem also
  writes `stage1` (the first stage-1 block has an identity shortcut).
* `stem`: ResNet-50 only, the stem output (its first block projects).
* `stage{s}/block{b}/conv1`: inner width after the first conv of a block;
  ResNet-50 also has `stage{s}/block{b}/conv2`.

Layer names: `stem_conv`, `stem_bn`, `stem_relu`, `stem_pool`; per block,
with prefix `stage{s}_block{b}`: `_conv1`, `_bn1`, `_relu1`, `_conv2`,
`_bn2`, ResNet-50 also `_relu2`, `_conv3`, `_bn3`; `_shortcut_conv`,
`_shortcut_bn`, `_add`, `_out`; then `pool`, `fc`. Under symmetric padding
the stem conv, the max-pool and every strided 3x3 conv are preceded by
`<name>_pad`. (EKG's own names conv0/conv1/conv2/conv3 map to
conv1/conv2/conv3/shortcut_conv here.)
"""

import keras

PLANES = (64, 128, 256, 512)
STEM_WIDTH = 64
SPECS = {
    # name: (block kind, blocks per stage)
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
}
EXPANSION = {"basic": 1, "bottleneck": 4}


def _blocks(name):
    """Yields (stage, block, stride, planes, has_projection) per block."""
    kind, counts = SPECS[name]
    in_width = STEM_WIDTH
    for s, (planes, n) in enumerate(zip(PLANES, counts), start=1):
        out_width = planes * EXPANSION[kind]
        for b in range(n):
            stride = 2 if (s > 1 and b == 0) else 1
            projection = stride != 1 or in_width != out_width
            yield s, b, stride, planes, projection
            in_width = out_width


def _stem_slot(name):
    kind = SPECS[name][0]
    return "stem" if kind == "bottleneck" else "stage1"


def default_widths(name):
    """Returns the reference widths of `name` as a slot -> width dict."""
    kind, _ = SPECS[name]
    widths = {}
    if _stem_slot(name) == "stem":
        widths["stem"] = STEM_WIDTH
    for s, b, _, planes, _ in _blocks(name):
        if b == 0:
            widths[f"stage{s}"] = planes * EXPANSION[kind]
        widths[f"stage{s}/block{b}/conv1"] = planes
        if kind == "bottleneck":
            widths[f"stage{s}/block{b}/conv2"] = planes
    return widths


def build(builder, x, widths, name, shortcut, num_classes):
    """Builds the network on tensor `x`; returns the logits tensor."""
    del shortcut
    kind, _ = SPECS[name]
    stem = _stem_slot(name)
    x = builder.conv_bn(x, widths[stem], 7, 2, "stem_{}", slot=stem, relu=True)
    x = builder.max_pool(x, 3, 2, name="stem_pool")
    for s, b, stride, _, projection in _blocks(name):
        prefix = f"stage{s}_block{b}"
        stream = f"stage{s}"
        inner = f"{stream}/block{b}"
        out = widths[stream]
        if kind == "basic":
            conv1 = f"{inner}/conv1"
            y = builder.basic_branch(
                x, widths[conv1], out, stride, prefix, slots=(conv1, stream)
            )
        else:
            y = x
            for i, k, strides in ((1, 1, 1), (2, 3, stride), (3, 1, 1)):
                slot = f"{inner}/conv{i}" if i < 3 else stream
                y = builder.conv_bn(
                    y,
                    widths[slot],
                    k,
                    strides,
                    f"{prefix}_{{}}{i}",
                    slot=slot,
                    relu=i < 3,
                    last=i == 3,
                )
        if projection:
            residual = builder.projection(x, out, stride, prefix, slot=stream)
        else:
            residual = x
        x = builder.residual(y, residual, prefix)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return builder.classifier(x, num_classes)
