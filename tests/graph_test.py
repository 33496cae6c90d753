"""Tests for tfgraft.graph: channel groups, conv order and alpha sources."""

import keras
import tensorflow as tf
from absl.testing import parameterized

from tfgraft import graph
from tfgraft import models

L = keras.layers


# === Hand-built models ===


def conv_bn_relu(x, filters, name, strides=1, kernel=3):
    if strides > 1:
        x = L.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
    padding = "valid" if strides > 1 else "same"
    x = L.Conv2D(
        filters, kernel, strides, padding=padding, use_bias=False, name=name
    )(x)
    x = L.BatchNormalization(name=f"{name}_bn")(x)
    return L.ReLU(name=f"{name}_relu")(x)


def basic_block(x, filters, name, strides=1, shortcut_first=False):
    """conv-BN-ReLU-conv-BN + (identity | 1x1 conv-BN), ReLU."""

    def shortcut():
        if strides == 1 and x.shape[-1] == filters:
            return x
        s = L.Conv2D(filters, 1, strides, use_bias=False, name=f"{name}_sc")(x)
        return L.BatchNormalization(name=f"{name}_sc_bn")(s)

    # Declaring the shortcut first must not change the (PyTorch) order.
    s = shortcut() if shortcut_first else None
    h = conv_bn_relu(x, filters, f"{name}_c1", strides)
    h = L.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_c2")(
        h
    )
    h = L.BatchNormalization(name=f"{name}_c2_bn")(h)
    if s is None:
        s = shortcut()
    merged = [s, h] if shortcut_first else [h, s]
    return L.ReLU(name=f"{name}_out")(L.Add(name=f"{name}_add")(merged))


def tiny_resnet(shortcut_first=False):
    x = keras.Input((8, 8, 3))
    y = conv_bn_relu(x, 4, "stem")
    y = basic_block(y, 4, "b1", shortcut_first=shortcut_first)
    y = basic_block(y, 8, "b2", strides=2, shortcut_first=shortcut_first)
    y = L.GlobalAveragePooling2D(name="gap")(y)
    return keras.Model(x, L.Dense(5, name="fc")(y))


def tiny_vgg():
    x = keras.Input((8, 8, 3))
    y = conv_bn_relu(x, 4, "conv1")
    y = conv_bn_relu(y, 4, "conv2")
    y = L.MaxPooling2D(2, name="pool1")(y)
    y = conv_bn_relu(y, 6, "conv3")
    y = L.MaxPooling2D(2, name="pool2")(y)
    y = L.Flatten(name="flatten")(y)
    return keras.Model(x, L.Dense(5, name="fc")(y))


def inverted_residual(x, expand, out, name, strides=1):
    h = conv_bn_relu(x, expand, f"{name}_expand", kernel=1)
    h = L.DepthwiseConv2D(
        3, strides, padding="same", use_bias=False, name=f"{name}_dw"
    )(h)
    h = L.ReLU(name=f"{name}_dw_relu")(
        L.BatchNormalization(name=f"{name}_dw_bn")(h)
    )
    h = L.Conv2D(out, 1, use_bias=False, name=f"{name}_project")(h)
    h = L.BatchNormalization(name=f"{name}_project_bn")(h)
    if strides != 1:
        return h
    s = x
    if x.shape[-1] != out:
        s = L.Conv2D(out, 1, use_bias=False, name=f"{name}_sc")(x)
        s = L.BatchNormalization(name=f"{name}_sc_bn")(s)
    return L.Add(name=f"{name}_add")([h, s])


def tiny_mobilenet():
    x = keras.Input((8, 8, 3))
    y = conv_bn_relu(x, 4, "stem")
    y = inverted_residual(y, 4, 6, "m1")  # projection shortcut
    y = inverted_residual(y, 12, 6, "m2")  # identity shortcut
    y = inverted_residual(y, 12, 8, "m3", strides=2)  # no shortcut
    y = L.GlobalAveragePooling2D()(y)
    return keras.Model(x, L.Dense(5, name="fc")(y))


@keras.saving.register_keras_serializable(package="tfgraft_test")
class PadChannels(L.Layer):
    """Option-A shortcut stand-in: subsample, pad zero channels."""

    def __init__(self, pad, **kwargs):
        super().__init__(**kwargs)
        self.pad = pad

    def call(self, x):
        x = x[:, ::2, ::2, :]
        return keras.ops.pad(x, [[0, 0], [0, 0], [0, 0], [self.pad, self.pad]])

    def compute_output_shape(self, s):
        h = None if s[1] is None else (s[1] + 1) // 2
        w = None if s[2] is None else (s[2] + 1) // 2
        return (s[0], h, w, s[3] + 2 * self.pad)


def option_a_resnet():
    x = keras.Input((8, 8, 3))
    y = conv_bn_relu(x, 4, "stem")
    y = basic_block(y, 4, "b1")
    h = conv_bn_relu(y, 8, "b2_c1", strides=2)
    h = L.Conv2D(8, 3, padding="same", use_bias=False, name="b2_c2")(h)
    h = L.BatchNormalization(name="b2_c2_bn")(h)
    s = PadChannels(2, name="b2_option_a")(y)
    y = L.ReLU()(L.Add(name="b2_add")([h, s]))
    y = L.GlobalAveragePooling2D()(y)
    return keras.Model(x, L.Dense(5, name="fc")(y))


# === Tests ===


class HandBuiltGraphTest(tf.test.TestCase, parameterized.TestCase):
    def test_conv_bn_relu_chain(self):
        g = graph.analyze(tiny_vgg())
        self.assertEqual(
            [n.name for n in g.convs()], ["conv1", "conv2", "conv3"]
        )
        c1, c2, c3 = g.convs()
        self.assertEqual(c1.in_group, 0)
        self.assertFalse(g.groups[0].prunable)
        self.assertEqual(g.groups[0].size, 3)
        self.assertEqual(c1.out_group, c2.in_group)
        self.assertEqual(c2.out_group, c3.in_group)
        self.assertNotEqual(c1.out_group, c2.out_group)
        self.assertEqual(
            [c1.bn, c2.bn, c3.bn], ["conv1_bn", "conv2_bn", "conv3_bn"]
        )
        self.assertEqual(c3.producers, ("conv2",))
        self.assertEqual(c1.producers, ())
        group = g.groups[c2.out_group]
        self.assertEqual(group.producers, ("conv2",))
        self.assertEqual(group.consumers, ("conv3",))
        self.assertEqual(group.size, 4)
        self.assertFalse(group.residual)
        self.assertTrue(group.prunable)
        # BN, ReLU and pooling carry the conv's group.
        self.assertEqual(g.layer_groups["conv2_bn"], (c2.out_group,) * 2)
        self.assertEqual(g.layer_groups["pool1"], (c2.out_group,) * 2)

    def test_flatten_dense(self):
        g = graph.analyze(tiny_vgg())
        (fc,) = g.dense()
        self.assertEqual(fc.kind, "dense")
        self.assertEqual(fc.in_group, g.nodes["conv3"].out_group)
        self.assertEqual(fc.in_spatial, 4)  # 2x2 map flattened
        self.assertEqual(fc.producers, ("conv3",))
        # Logits are the model's interface.
        self.assertFalse(g.groups[fc.out_group].prunable)

    def test_vgg_alpha_sources(self):
        g = graph.analyze(tiny_vgg())
        self.assertEqual(
            g.alpha_sources(),
            {
                "conv1": "conv1",
                "conv1_bn": "conv1",
                "conv2": "conv2",
                "conv2_bn": "conv2",
                "conv3": "conv3",
                "conv3_bn": "conv3",
                "fc": "conv3",
            },
        )

    @parameterized.named_parameters(
        ("main_first", False), ("shortcut_first", True)
    )
    def test_residual_groups_are_tied(self, shortcut_first):
        g = graph.analyze(tiny_resnet(shortcut_first))
        n = g.nodes
        stream1 = n["stem"].out_group
        # Identity block: stem and b1_c2 write one residual stream.
        self.assertEqual(n["b1_c2"].out_group, stream1)
        self.assertTrue(g.groups[stream1].residual)
        self.assertEqual(g.groups[stream1].producers, ("stem", "b1_c2"))
        self.assertEqual(
            g.groups[stream1].consumers, ("b1_c1", "b2_c1", "b2_sc")
        )
        # Projection block: main and shortcut outputs tied, inputs on stream1.
        stream2 = n["b2_c2"].out_group
        self.assertEqual(n["b2_sc"].out_group, stream2)
        self.assertEqual(n["b2_sc"].in_group, stream1)
        self.assertEqual(n["b2_c1"].in_group, stream1)
        self.assertNotEqual(stream1, stream2)
        self.assertTrue(g.groups[stream2].residual)
        self.assertEqual(g.groups[stream2].size, 8)
        # Block-internal groups stay free.
        internal = g.groups[n["b2_c1"].out_group]
        self.assertFalse(internal.residual)
        self.assertEqual(internal.consumers, ("b2_c2",))
        self.assertEqual(n["b2_c1"].producers, ("stem", "b1_c2"))
        self.assertEqual(n["fc"].producers, ("b2_c2", "b2_sc"))
        self.assertLen(g.groups, 6)  # input, 2 streams, 2 internal, logits

    @parameterized.named_parameters(
        ("main_first", False), ("shortcut_first", True)
    )
    def test_residual_order_and_shortcuts(self, shortcut_first):
        g = graph.analyze(tiny_resnet(shortcut_first))
        # PyTorch state-dict order: main branch, then the shortcut.
        self.assertEqual(
            [n.name for n in g.convs()],
            ["stem", "b1_c1", "b1_c2", "b2_c1", "b2_c2", "b2_sc"],
        )
        shortcuts = [n for n in g.convs() if n.is_shortcut]
        self.assertEqual([n.name for n in shortcuts], ["b2_sc"])
        self.assertEqual(shortcuts[0].block_last_conv, "b2_c2")
        self.assertEqual(shortcuts[0].bn, "b2_sc_bn")
        # The stem feeds the identity shortcut but is no shortcut conv.
        self.assertIsNone(g.nodes["stem"].block_last_conv)

    def test_residual_alpha_sources(self):
        alpha = graph.analyze(tiny_resnet()).alpha_sources()
        self.assertEqual(alpha["b2_sc"], "b2_c2")
        self.assertEqual(alpha["b2_sc_bn"], "b2_c2")
        self.assertEqual(alpha["b2_c2_bn"], "b2_c2")
        self.assertEqual(alpha["b1_c1_bn"], "b1_c1")
        self.assertEqual(alpha["stem_bn"], "stem")
        self.assertEqual(alpha["fc"], "b2_c2")
        self.assertLen(alpha, 6 + 6 + 1)  # convs, BNs, fc
        # Same order as the model's weighted layers, PyTorch-like.
        self.assertEqual(
            list(alpha)[-5:], ["b2_c2", "b2_c2_bn", "b2_sc", "b2_sc_bn", "fc"]
        )

    def test_depthwise_passes_group_through(self):
        g = graph.analyze(tiny_mobilenet())
        n = g.nodes
        for block in ("m1", "m2", "m3"):
            dw = n[f"{block}_dw"]
            self.assertEqual(dw.kind, "depthwise")
            self.assertEqual(dw.in_group, n[f"{block}_expand"].out_group)
            self.assertEqual(dw.out_group, dw.in_group)
            self.assertEqual(n[f"{block}_project"].producers, (f"{block}_dw",))
            self.assertEqual(dw.bn, f"{block}_dw_bn")
        self.assertEqual(
            g.groups[n["m1_dw"].out_group].producers, ("m1_expand", "m1_dw")
        )
        # m1 (projection) and m2 (identity) write one stream, m3 does not.
        self.assertEqual(n["m1_project"].out_group, n["m1_sc"].out_group)
        self.assertEqual(n["m2_project"].out_group, n["m1_project"].out_group)
        self.assertTrue(g.groups[n["m2_project"].out_group].residual)
        self.assertFalse(g.groups[n["m3_project"].out_group].residual)

    def test_mobilenet_alpha_and_order(self):
        g = graph.analyze(tiny_mobilenet())
        self.assertEqual(
            [n.name for n in g.convs()],
            [
                "stem",
                "m1_expand", "m1_dw", "m1_project", "m1_sc",
                "m2_expand", "m2_dw", "m2_project",
                "m3_expand", "m3_dw", "m3_project",
            ],
        )  # fmt: skip
        alpha = g.alpha_sources()
        self.assertTrue(g.nodes["m1_sc"].is_shortcut)
        self.assertEqual(alpha["m1_sc"], "m1_project")
        self.assertEqual(alpha["m1_sc_bn"], "m1_project")
        self.assertEqual(alpha["m1_dw"], "m1_dw")
        self.assertEqual(alpha["m1_dw_bn"], "m1_dw")
        self.assertEqual(alpha["fc"], "m3_project")

    def test_option_a_starts_new_group(self):
        g = graph.analyze(option_a_resnet())
        n = g.nodes
        stage1 = n["b1_c2"].out_group
        stage2 = n["b2_c2"].out_group
        self.assertNotEqual(stage1, stage2)
        self.assertEqual(g.groups[stage1].producers, ("stem", "b1_c2"))
        self.assertTrue(g.groups[stage1].prunable)
        # Zero-padded channels come from no conv: not prunable by masks.
        self.assertFalse(g.groups[stage2].prunable)
        self.assertTrue(g.groups[stage2].residual)
        self.assertFalse(any(c.is_shortcut for c in g.convs()))
        self.assertEqual(g.layer_groups["b2_option_a"], (stage1, stage2))
        # Producers still flow through the unknown layer.
        self.assertEqual(n["fc"].producers, ("stem", "b1_c2", "b2_c2"))
        alpha = g.alpha_sources()
        self.assertEqual(alpha["fc"], "b2_c2")
        self.assertNotIn("b2_option_a", alpha)

    def test_concatenate_starts_unprunable_group(self):
        x = keras.Input((4, 4, 3))
        a = L.Conv2D(2, 1, name="a")(x)
        b = L.Conv2D(3, 1, name="b")(x)
        y = L.Concatenate(name="cat")([a, b])
        y = L.Conv2D(4, 1, name="c")(y)
        g = graph.analyze(keras.Model(x, y))
        cat = g.groups[g.nodes["c"].in_group]
        self.assertEqual(cat.size, 5)
        self.assertFalse(cat.prunable)
        self.assertEqual(g.nodes["c"].producers, ("a", "b"))
        self.assertTrue(g.groups[g.nodes["a"].out_group].prunable)

    def test_keras_op_add_is_a_residual_merge(self):
        x = keras.Input((4, 4, 3))
        a = L.Conv2D(2, 1, name="a")(x)
        b = L.Conv2D(2, 1, name="b")(a)
        y = L.Conv2D(2, 1, name="c")(a + b)
        g = graph.analyze(keras.Model(x, y))
        self.assertEqual(g.nodes["a"].out_group, g.nodes["b"].out_group)
        self.assertTrue(g.groups[g.nodes["a"].out_group].residual)

    def test_broadcast_multiply_keeps_groups_apart(self):
        # Squeeze-excite style gate with a single channel: no tie.
        x = keras.Input((4, 4, 3))
        a = L.Conv2D(4, 1, name="a")(x)
        gate = L.Conv2D(1, 1, name="gate")(a)
        y = L.Conv2D(2, 1, name="c")(L.Multiply()([a, gate]))
        g = graph.analyze(keras.Model(x, y))
        self.assertEqual(g.nodes["c"].in_group, g.nodes["a"].out_group)
        self.assertNotEqual(g.nodes["gate"].out_group, g.nodes["a"].out_group)

    def test_shared_conv_is_one_node(self):
        x = keras.Input((4, 4, 3))
        stem = L.Conv2D(2, 1, name="stem")
        shared = L.Conv2D(2, 1, name="shared")
        a = shared(stem(x))
        b = shared(L.Conv2D(2, 1, name="other")(x))
        g = graph.analyze(keras.Model(x, L.Add()([a, b])))
        self.assertEqual(list(g.nodes).count("shared"), 1)
        # Both call sites read the same kernel rows: inputs tied.
        self.assertEqual(g.nodes["stem"].out_group, g.nodes["other"].out_group)
        self.assertEqual(g.nodes["shared"].producers, ("stem", "other"))

    def test_weighted_non_conv_layer_uses_recent_conv(self):
        x = keras.Input((4, 4, 3))
        y = L.Conv2D(2, 1, name="a")(x)
        y = L.PReLU(name="prelu")(y)
        y = L.Conv2D(2, 1, name="b")(y)
        g = graph.analyze(keras.Model(x, y))
        self.assertEqual(g.alpha_sources(), {"a": "a", "prelu": "a", "b": "b"})

    def test_mlp_without_convs(self):
        x = keras.Input((6,))
        y = L.Dense(4, name="d1")(x)
        y = L.BatchNormalization(name="bn")(y)
        y = L.Dense(3, name="d2")(y)
        g = graph.analyze(keras.Model(x, y))
        self.assertEqual(g.nodes["d1"].bn, "bn")
        self.assertEqual(g.nodes["d2"].in_group, g.nodes["d1"].out_group)
        self.assertEqual(
            g.alpha_sources(), {"d1": "d1", "bn": "d1", "d2": "d2"}
        )

    def test_sequential(self):
        model = keras.Sequential(
            [
                keras.Input((4, 4, 3)),
                L.Conv2D(2, 3, name="a"),
                L.BatchNormalization(name="bn"),
                L.Flatten(),
                L.Dense(2, name="fc"),
            ]
        )
        g = graph.analyze(model)
        self.assertEqual(list(g.nodes), ["a", "fc"])
        self.assertEqual(g.nodes["fc"].in_spatial, 4)

    def test_nested_model_raises(self):
        inner_in = keras.Input((4, 4, 3))
        inner = keras.Model(inner_in, L.Conv2D(2, 1)(inner_in), name="inner")
        x = keras.Input((4, 4, 3))
        model = keras.Model(x, L.Conv2D(2, 1)(inner(x)))
        with self.assertRaisesRegex(graph.GraphError, "'inner' is a nested"):
            graph.analyze(model)

    def test_channels_first_raises(self):
        x = keras.Input((3, 4, 4))
        y = L.Conv2D(2, 1, data_format="channels_first", name="cf")(x)
        with self.assertRaisesRegex(graph.GraphError, "'cf' is channels_first"):
            graph.analyze(keras.Model(x, y))

    def test_subclassed_model_raises(self):
        class Net(keras.Model):
            def call(self, x):
                return x

        with self.assertRaisesRegex(
            graph.GraphError,
            r"not a functional.*keras\.Model\(inputs, outputs\).*Sequential",
        ):
            graph.analyze(Net())


# === Matching layers across models ===


def _residual(skip_from_first=False, auto_names=True):
    """conv a -> conv b -> conv c, c + (b or a); optionally named."""

    def name(n):
        return None if auto_names else n

    x = keras.Input((4, 4, 3))
    a = L.Conv2D(2, 1, name=name("a"))(x)
    b = L.Conv2D(2, 1, name=name("b"))(a)
    c = L.Conv2D(2, 1, name=name("c"))(b)
    y = L.Add(name=name("add"))([c, a if skip_from_first else b])
    y = L.Dense(3, name=name("fc"))(L.GlobalAveragePooling2D()(y))
    return keras.Model(x, y)


class MatchLayersTest(tf.test.TestCase, parameterized.TestCase):
    def test_auto_named_models_pair_by_position(self):
        models = [_residual(), _residual(), _residual(auto_names=False)]
        matched = graph.match_layers(models)
        self.assertLen(matched, 3)
        for layers in matched:
            self.assertEqual(
                [type(op).__name__ for op in layers],
                ["Conv2D"] * 3
                + ["Add", "GlobalAveragePooling2D", "Dense"],
            )
        self.assertEqual(
            [op.name for op in matched[2]],
            ["a", "b", "c", "add", matched[2][4].name, "fc"],
        )
        # Every pair is a different layer object of equal weight shapes.
        for ops in zip(*matched):
            self.assertLen({id(op) for op in ops}, 3)
            self.assertLen(
                {tuple(tuple(w.shape) for w in op.weights) for op in ops}, 1
            )
        # The canonical order is the analysis order.
        self.assertEqual(
            [op.name for op in matched[0]], graph.analyze(models[0]).order
        )

    def test_shared_layers_and_keras_ops(self):
        def make():
            x = keras.Input((4, 4, 2))
            shared = L.Conv2D(2, 1)
            y = shared(shared(x)) + x
            return keras.Model(x, L.Conv2D(2, 1)(y))

        a, b = graph.match_layers([make(), make()])
        # The shared conv once, the `+` op, the last conv.
        self.assertEqual(
            [type(op).__name__ for op in a], ["Conv2D", "Add", "Conv2D"]
        )
        self.assertEqual(
            [type(op).__name__ for op in b], ["Conv2D", "Add", "Conv2D"]
        )
        self.assertIsNot(a[0], b[0])

    def test_other_wiring_is_a_mismatch(self):
        models = [_residual(), _residual(skip_from_first=True)]
        add = [m.layers[4].name for m in models]
        with self.assertRaisesRegex(
            graph.GraphMismatchError,
            rf"^net 1 layer 3 \('{add[1]}', Add\) does not match net 0 "
            rf"layer 3 \('{add[0]}', Add\): inputs from \(layer, output\) "
            r"\[\(2, 0\), \(0, 0\)\] vs \[\(2, 0\), \(1, 0\)\]$",
        ):
            graph.match_layers(models)

    def test_other_width_names_both_layers(self):
        x = keras.Input((4, 4, 3))
        y = L.Conv2D(2, 1, name="a")(x)
        y = L.Conv2D(5, 1, name="b")(y)
        other = keras.Model(x, y)
        with self.assertRaisesRegex(
            graph.GraphMismatchError,
            r"^model 1 layer 1 \('b', Conv2D 1x1x2->5\) does not match model "
            r"0 layer 1 \('conv2d_\d+', Conv2D 1x1x2->2\)$",
        ):
            graph.match_layers([_residual(), other], label="model")

    def test_extra_layer_and_outputs(self):
        def chain(n):
            return keras.Sequential(
                [keras.Input((3,))] + [L.Dense(3) for _ in range(n)]
            )

        with self.assertRaisesRegex(
            graph.GraphMismatchError,
            r"^net 1 has 3 layers and net 0 has 2: net 1 layer 2 "
            r"\('dense_\d+', Dense 3->3\) has no counterpart$",
        ):
            graph.match_layers([chain(2), chain(3)])
        x = keras.Input((3,))
        d = L.Dense(3)(x)
        two = keras.Model(x, [d, L.Dense(3)(d)])
        x = keras.Input((3,))
        d = L.Dense(3)(x)
        swapped = keras.Model(x, [L.Dense(3)(d), d])
        with self.assertRaisesRegex(
            graph.GraphMismatchError, r"net 1's outputs come from"
        ):
            graph.match_layers([two, swapped])

    @parameterized.named_parameters(
        ("conv", L.Conv2D(8, 3), (2, 8, 8, 4), "Conv2D 3x3x4->8"),
        ("dense", L.Dense(5), (2, 4), "Dense 4->5"),
        (
            "depthwise",
            L.DepthwiseConv2D(3, depth_multiplier=2),
            (2, 8, 8, 4),
            "DepthwiseConv2D 3x3x4x2",
        ),
        ("bn", L.BatchNormalization(), (2, 8, 8, 4), "BatchNormalization 4"),
        ("prelu", L.PReLU(), (2, 3, 4), "PReLU 3x4"),
        ("relu", L.ReLU(), (2, 4), "ReLU"),
    )
    def test_describe_layer(self, layer, shape, expected):
        layer.build(shape)
        self.assertEqual(graph.describe_layer(layer), expected)


def _pytorch_order_resnet_cifar(blocks, shortcut):
    """Conv names in the reference's state-dict order."""
    names = ["stem_conv"]
    for stage in (1, 2, 3):
        for b in range(blocks):
            prefix = f"stage{stage}_block{b}"
            names += [f"{prefix}_conv1", f"{prefix}_conv2"]
            if shortcut == "projection" and stage > 1 and b == 0:
                names.append(f"{prefix}_shortcut_conv")
    return names


class ZooGraphTest(tf.test.TestCase):
    def test_resnet20_option_a(self):
        model = models.build_model("resnet20", shortcut="A")
        g = graph.analyze(model)
        self.assertEqual(
            [n.name for n in g.convs()], _pytorch_order_resnet_cifar(3, "A")
        )
        self.assertFalse(any(n.is_shortcut for n in g.convs()))
        alpha = g.alpha_sources()
        for node in g.convs():
            self.assertEqual(alpha[node.name], node.name)
            self.assertEqual(alpha[node.bn], node.name)
        self.assertEqual(alpha["fc"], "stage3_block2_conv2")
        self.assertLen(alpha, 19 * 2 + 1)  # option A has no parameters
        # Stage 1 stream: stem + three conv2, tied and prunable.
        stream = g.groups[g.nodes["stem_conv"].out_group]
        self.assertEqual(
            stream.producers,
            ("stem_conv",) + tuple(f"stage1_block{b}_conv2" for b in range(3)),
        )
        self.assertTrue(stream.residual)
        self.assertEqual(g.nodes["stem_conv"].in_group, 0)

    def test_resnet56_projection(self):
        model = models.build_model(
            "resnet56", preset="pff", shortcut="projection"
        )
        g = graph.analyze(model)
        self.assertEqual(
            [n.name for n in g.convs()],
            _pytorch_order_resnet_cifar(9, "projection"),
        )
        alpha = g.alpha_sources()
        for stage in (2, 3):
            sc = g.nodes[f"stage{stage}_block0_shortcut_conv"]
            self.assertTrue(sc.is_shortcut)
            self.assertEqual(sc.block_last_conv, f"stage{stage}_block0_conv2")
            self.assertEqual(alpha[sc.name], f"stage{stage}_block0_conv2")
            self.assertEqual(alpha[sc.bn], f"stage{stage}_block0_conv2")
            stream = g.groups[sc.out_group]
            self.assertLen(stream.producers, 10)  # 9 conv2 + shortcut
            self.assertTrue(stream.residual)
        self.assertEqual(alpha["fc"], "stage3_block8_conv2")
        # Exactly the 27 block-internal groups + 3 streams are prunable.
        prunable = [gr for gr in g.groups.values() if gr.prunable]
        self.assertLen(prunable, 30)
        self.assertLen([gr for gr in prunable if gr.residual], 3)

    def test_mobilenetv2(self):
        g = graph.analyze(models.build_model("mobilenetv2"))
        alpha = g.alpha_sources()
        shortcuts = [n for n in g.convs() if n.is_shortcut]
        self.assertNotEmpty(shortcuts)
        for sc in shortcuts:
            block = sc.name[: -len("_shortcut_conv")]
            convs = [
                n.name for n in g.convs()
                if n.name.startswith(block + "_") and not n.is_shortcut
            ]  # fmt: skip
            self.assertLen(convs, 3)
            # The shortcut follows the block's project conv and uses its alpha.
            self.assertEqual(sc.block_last_conv, convs[-1])
            self.assertEqual(alpha[sc.name], convs[-1])
            order = [n.name for n in g.convs()]
            self.assertEqual(order.index(sc.name), order.index(convs[-1]) + 1)
        for dw in (n for n in g.convs() if n.kind == "depthwise"):
            self.assertEqual(dw.in_group, dw.out_group)
            self.assertEqual(alpha[dw.name], dw.name)
        self.assertEqual(alpha["fc"], g.convs()[-1].name)

    def test_vgg16(self):
        g = graph.analyze(models.build_model("vgg16"))
        convs = g.convs()
        self.assertLen(convs, 13)
        alpha = g.alpha_sources()
        self.assertEqual(alpha[convs[0].name], convs[0].name)
        self.assertEqual(alpha["fc"], convs[-1].name)
        for prev, node in zip(convs, convs[1:]):
            self.assertEqual(node.in_group, prev.out_group)
            self.assertEqual(node.producers, (prev.name,))
            self.assertEqual(alpha[node.bn], node.name)
        self.assertEqual(g.nodes["fc"].in_group, convs[-1].out_group)
        self.assertEqual(g.nodes["fc"].in_spatial, 1)

    def test_resnet50_bottleneck_order(self):
        model = models.build_model("resnet50", input_shape=(32, 32, 3))
        g = graph.analyze(model)
        order = [n.name for n in g.convs()]
        self.assertEqual(
            order[:6],
            [
                "stem_conv",
                "stage1_block0_conv1",
                "stage1_block0_conv2",
                "stage1_block0_conv3",
                "stage1_block0_shortcut_conv",
                "stage1_block1_conv1",
            ],
        )
        alpha = g.alpha_sources()
        self.assertEqual(
            alpha["stage1_block0_shortcut_conv"], "stage1_block0_conv3"
        )
        self.assertEqual(alpha["fc"], "stage4_block2_conv3")
        self.assertLen([n for n in g.convs() if n.is_shortcut], 4)
        # LW-DNA latent sharing (METHODS §4.2): the ResNet-50 stem has its
        # own group, stage 1's stream is the conv3s plus the projection.
        stream = g.groups[g.nodes["stage1_block0_conv3"].out_group]
        self.assertNotEqual(g.nodes["stem_conv"].out_group, stream.id)
        self.assertEqual(
            stream.producers,
            (
                "stage1_block0_conv3",
                "stage1_block0_shortcut_conv",
                "stage1_block1_conv3",
                "stage1_block2_conv3",
            ),
        )

    def test_resnet18_stem_shares_stage1_stream(self):
        model = models.build_model("resnet18", input_shape=(32, 32, 3))
        g = graph.analyze(model)
        stream = g.groups[g.nodes["stem_conv"].out_group]
        self.assertEqual(
            stream.producers,
            ("stem_conv", "stage1_block0_conv2", "stage1_block1_conv2"),
        )
        self.assertTrue(stream.residual)
        # The maxpool after the stem passes the group on.
        self.assertEqual(g.nodes["stage1_block0_conv1"].in_group, stream.id)


if __name__ == "__main__":
    tf.test.main()
