"""MobileNetV2 for CIFAR (the grafting repo's variant) on channel configs.

Topology (METHODS.md §1.4): conv3x3 stem, stride 1 (32) + BN + ReLU; seven
stages (t, c, n, s) = (1,16,1,1) (6,24,2,1) (6,32,3,2) (6,64,4,2) (6,96,3,1)
(6,160,3,2) (6,320,1,1), the first block of a stage with stride s; block =
1x1 expand to t * C_in (present even for t = 1) + BN + ReLU, 3x3 depthwise
(stride) + BN + ReLU, 1x1 project + BN; residual only at stride 1: identity
when C_in == C_out, else 1x1 conv + BN. Head 1x1 (1280) + BN + ReLU, 4x4
average pool, flatten, FC. Which shortcut a block has is fixed by the
reference widths, never by a config, so layer names never change.

Width slots and the sharing rule:

* `stem`: stem conv output.
* `stage1` ... `stage7`: the stage's stream. Every project conv of a stage
  writes it: blocks 1..n-1 add an identity residual, so their outputs (and
  the input they add to, block 0's output) must agree. Block 0 of every
  stage has a conv shortcut or none, so streams of different stages are
  independent; the conv shortcut writes its stage's stream too.
* `stage{s}/block{b}/expand`: width of the expand conv, which the depthwise
  conv keeps.
* `head`: head 1x1 conv output.

Layer names: `stem_conv`, `stem_bn`, `stem_relu`; per block, with prefix
`stage{s}_block{b}`: `_expand_conv`, `_expand_bn`, `_expand_relu`,
`_dw_conv` (a `DepthwiseConv2D`), `_dw_bn`, `_dw_relu`, `_project_conv`,
`_project_bn`, `_shortcut_conv`, `_shortcut_bn`, `_add`; `head_conv`,
`head_bn`, `head_relu`, `pool`, `flatten`, `fc`. Strided depthwise convs under
symmetric padding are preceded by `<name>_pad`. A `conv_layer` factory is
used for the regular convs only.
"""

import keras

STEM_WIDTH = 32
HEAD_WIDTH = 1280
# (expansion t, stream width c, blocks n, first stride s) per stage.
STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _blocks():
    """Yields (stage, block, stride, t, c_in, c_out, shortcut) per block.

    `shortcut` is None (no residual), "identity" or "conv", from the
    reference widths.
    """
    c_in = STEM_WIDTH
    for s, (t, c, n, first_stride) in enumerate(STAGES, start=1):
        for b in range(n):
            stride = first_stride if b == 0 else 1
            if stride != 1:
                shortcut = None
            elif c_in == c:
                shortcut = "identity"
            else:
                shortcut = "conv"
            yield s, b, stride, t, c_in, c, shortcut
            c_in = c


def default_widths(name):
    """Returns the reference widths as a slot -> width dict."""
    del name
    widths = {"stem": STEM_WIDTH}
    for s, b, _, t, c_in, c, _ in _blocks():
        if b == 0:
            widths[f"stage{s}"] = c
        widths[f"stage{s}/block{b}/expand"] = t * c_in
    widths["head"] = HEAD_WIDTH
    return widths


def build(builder, x, widths, name, shortcut, num_classes):
    """Builds the network on tensor `x`; returns the logits tensor."""
    del name, shortcut
    x = builder.conv_bn(
        x, widths["stem"], 3, 1, "stem_{}", slot="stem", relu=True
    )
    for s, b, stride, _, _, _, shortcut in _blocks():
        prefix = f"stage{s}_block{b}"
        expand = f"stage{s}/block{b}/expand"
        stream = f"stage{s}"
        y = builder.conv_bn(
            x,
            widths[expand],
            1,
            1,
            f"{prefix}_expand_{{}}",
            slot=expand,
            relu=True,
        )
        y = builder.depthwise_conv(
            y, 3, stride, name=f"{prefix}_dw_conv", slot=expand
        )
        y = builder.batch_norm(y, name=f"{prefix}_dw_bn", slot=expand)
        y = builder.activate(y, name=f"{prefix}_dw_relu")
        y = builder.conv_bn(
            y,
            widths[stream],
            1,
            1,
            f"{prefix}_project_{{}}",
            slot=stream,
            # Zero-init (ekg) only where a residual keeps the signal alive.
            last=shortcut is not None,
        )
        if shortcut == "conv":
            residual = builder.projection(
                x, widths[stream], 1, prefix, slot=stream
            )
            y = builder.residual(y, residual, prefix, activate=False)
        elif shortcut == "identity":
            y = builder.residual(y, x, prefix, activate=False)
        x = y
    x = builder.conv_bn(
        x, widths["head"], 1, 1, "head_{}", slot="head", relu=True
    )
    x = keras.layers.AveragePooling2D(4, name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    return builder.classifier(x, num_classes)
