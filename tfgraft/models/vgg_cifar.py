"""VGG16 for CIFAR (the grafting / PFF variant) on explicit channel configs.

Topology (METHODS.md §1.4, §2.3): 64, 64, M, 128, 128, M, 256 x3, M, 512 x3,
M, 512 x3, M, where each number is conv3x3 (stride 1, padding 1) + BN + ReLU
and M is a 2x2 max-pool; flatten; one FC to the classes. The references end
the features with `AvgPool2d(1)`, a no-op kept here as `avgpool` so that
the PFF counter sees its 512 FLOPs (METHODS §2.2). Under the
`grafting` preset the convs carry a bias, under `pff` they do not.

Width slots: `conv0` ... `conv12`, one per conv in order. The FC input width
is the last conv's width times the final spatial size (1x1 for 32x32 input).

Layer names: `conv{i}`, `bn{i}`, `relu{i}` for i = 0..12, `pool0` ...
`pool4`, `avgpool`, `flatten`, `fc`.
"""

import keras

CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M")
CFG += (512, 512, 512, "M", 512, 512, 512, "M")


def default_widths(name):
    """Returns the reference widths as a slot -> width dict."""
    del name  # one VGG in the zoo
    widths = [v for v in CFG if v != "M"]
    return {f"conv{i}": w for i, w in enumerate(widths)}


def build(builder, x, widths, name, shortcut, num_classes):
    """Builds the network on tensor `x`; returns the logits tensor."""
    del name, shortcut
    conv, pool = 0, 0
    for v in CFG:
        if v == "M":
            x = keras.layers.MaxPooling2D(2, 2, name=f"pool{pool}")(x)
            pool += 1
            continue
        slot = f"conv{conv}"
        x = builder.conv_bn(
            x, widths[slot], 3, 1, f"{{}}{conv}", slot=slot, relu=True
        )
        conv += 1
    x = keras.layers.AveragePooling2D(1, 1, name="avgpool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    return builder.classifier(x, num_classes)
