"""Filter Grafting wired to live nets: METHODS.md §1.7 acceptance checks."""

import math

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tfgraft import models
from tfgraft.config import ConfigError
from tfgraft.config import GraftConfig
from tfgraft.config import OptimConfig
from tfgraft.grafting import criteria
from tfgraft.grafting import grafter as grafter_lib
from tfgraft.grafting import job as graft_job
from tfgraft.testing import devices
from tfgraft.training import optimizers
from tfgraft.training import schedules
from tfgraft.training import trainer as trainer_lib


def _net(seed, name="resnet20", width=0.25, **kwargs):
    keras.utils.set_random_seed(seed)
    return models.build_model(
        name, width_mult=width, model_name=f"n{seed}", **kwargs
    )


def _perturb_bn(net, seed):
    """Gives BN moving stats distinct values so their blend is visible."""
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            for v in (layer.moving_mean, layer.moving_variance, layer.gamma):
                v.assign(rng.uniform(0.5, 1.5, v.shape).astype("float32"))


def _values(net):
    return [w.numpy().copy() for w in net.weights]


class GrafterTest(tf.test.TestCase, parameterized.TestCase):
    def test_identical_nets_are_unchanged(self):
        a, b = _net(1), _net(1)
        _perturb_bn(a, 0)
        _perturb_bn(b, 0)
        before = _values(a)
        grafter_lib.Grafter([a, b]).graft_step()
        for x, y, z in zip(before, _values(a), _values(b)):
            self.assertAllClose(x, y, atol=0, rtol=0)
            self.assertAllClose(x, z, atol=0, rtol=0)

    @parameterized.named_parameters(
        ("relu", "resnet20"), ("leaky", "resnet20_leaky")
    )
    def test_two_nets_become_equal(self, name):
        a, b = _net(1, name), _net(2, name)
        _perturb_bn(a, 1)
        _perturb_bn(b, 2)
        grafter_lib.Grafter([a, b]).graft_step()
        for x, y in zip(_values(a), _values(b)):
            self.assertAllClose(x, y, atol=1e-6)

    def test_three_nets_ring_uses_own_and_previous_only(self):
        nets = [_net(s) for s in (1, 2, 3)]
        other = [_net(s) for s in (1, 2, 4)]  # only net 2 differs
        for n in nets + other:
            _perturb_bn(n, 5)
        grafter_lib.Grafter(nets).graft_step()
        grafter_lib.Grafter(other).graft_step()
        # Net 1 receives from net 0: unaffected by net 2's change.
        for x, y in zip(_values(nets[1]), _values(other[1])):
            self.assertAllClose(x, y, atol=0, rtol=0)
        # Net 0 receives from net 2: affected.
        diffs = [
            np.abs(x - y).max()
            for x, y in zip(_values(nets[0]), _values(other[0]))
        ]
        self.assertGreater(max(diffs), 1e-3)

    @parameterized.named_parameters(
        ("relu", "resnet20"), ("leaky", "resnet20_leaky")
    )
    def test_blend_matches_formula_with_inherited_alphas(self, name):
        a, b = _net(1, name), _net(2, name)
        _perturb_bn(a, 1)
        _perturb_bn(b, 2)
        grafter = grafter_lib.Grafter([a, b])
        plan = grafter.plan
        va, vb = _values(a), _values(b)
        h = {
            0: [float(x) for x in grafter.information(0)],
            1: [float(x) for x in grafter.information(1)],
        }
        grafter.graft_step()
        new_a = _values(a)
        moved = 0.0
        for t, src in enumerate(plan.tensor_source):
            d = h[0][src] - h[1][src]
            alpha = round(0.4 / math.pi * math.atan(500 * d) + 0.5, 2)
            expected = alpha * va[t] + (1 - alpha) * vb[t]
            self.assertAllClose(new_a[t], expected, atol=1e-6)
            moved = max(moved, float(np.abs(new_a[t] - va[t]).max()))
        self.assertGreater(moved, 1e-3)

    @parameterized.named_parameters(
        ("relu", "resnet20"), ("leaky", "resnet20_leaky")
    )
    def test_alpha_map_follows_the_graph(self, name):
        net = _net(1, name)
        plan = grafter_lib.make_plan(net)
        source_of = {}
        for layer, src in zip(plan.tensor_layer, plan.tensor_source):
            source_of[layer] = plan.sources[src]
        for layer in net.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                conv = layer.name.replace("_bn", "_conv")
                self.assertEqual(source_of[layer.name], conv)
        self.assertEqual(source_of["fc"], "stage3_block2_conv2")
        self.assertEqual(len(plan.tensor_layer), len(net.weights))

    @parameterized.named_parameters(("A", None), ("projection", "projection"))
    def test_leaky_twin_has_the_relu_plan(self, shortcut):
        # The alpha map comes from the graph, where a LeakyReLU passes its
        # conv's output on exactly as a ReLU does.
        relu = grafter_lib.make_plan(_net(1, shortcut=shortcut))
        leaky = grafter_lib.make_plan(
            _net(1, "resnet20_leaky", shortcut=shortcut)
        )
        self.assertEqual(leaky, relu)

    def test_mobilenet_shortcut_uses_project_conv_alpha(self):
        net = _net(1, name="mobilenetv2", width=0.25)
        plan = grafter_lib.make_plan(net)
        source_of = {
            layer: plan.sources[src]
            for layer, src in zip(plan.tensor_layer, plan.tensor_source)
        }
        shortcuts = [n for n in source_of if "shortcut_conv" in n]
        self.assertNotEmpty(shortcuts)
        for name in shortcuts:
            self.assertNotEqual(source_of[name], name)
            self.assertTrue(source_of[name].endswith("project_conv"), name)
        self.assertNotIn(shortcuts[0], plan.convs)

    def test_filter_level_identical_nets_unchanged(self):
        a, b = (
            _net(3, name="vgg16", width=0.125),
            _net(3, name="vgg16", width=0.125),
        )
        before = _values(a)
        grafter_lib.Grafter([a, b], level="filter").graft_step()
        for x, y in zip(before, _values(a)):
            self.assertAllClose(x, y, atol=0, rtol=0)

    def test_filter_level_uses_gamma_ratio(self):
        a = _net(3, name="vgg16", width=0.125)
        b = _net(4, name="vgg16", width=0.125)
        _perturb_bn(a, 1)
        _perturb_bn(b, 2)
        ga = a.get_layer("bn0").gamma.numpy()
        gb = b.get_layer("bn0").gamma.numpy()
        beta_a = a.get_layer("bn0").beta.numpy()
        beta_b = b.get_layer("bn0").beta.numpy()
        fc_before = a.get_layer("fc").kernel.numpy()
        grafter_lib.Grafter([a, b], level="filter").graft_step()
        w = np.abs(ga) / (np.abs(ga) + np.abs(gb))
        self.assertAllClose(
            a.get_layer("bn0").beta.numpy(),
            w * beta_a + (1 - w) * beta_b,
            atol=1e-6,
        )
        self.assertAllClose(a.get_layer("fc").kernel.numpy(), fc_before)

    def test_optimizer_slots_untouched_and_difflr(self):
        self.assertAllClose(graft_job.difflr_scales(2), [0.5, 1.0])
        self.assertAllClose(graft_job.difflr_scales(3), [0.25, 0.75, 1.0])
        self.assertAllClose(
            graft_job.difflr_scales(4), [0.1464, 0.5, 0.8536, 1.0], atol=1e-4
        )
        self.assertAllClose(
            graft_job.difflr_scales(6),
            [0.067, 0.25, 0.5, 0.75, 0.933, 1.0],
            atol=1e-3,
        )
        cos = schedules.make_schedule(
            OptimConfig(schedule="cosine"), steps_per_epoch=5, total_steps=50
        )
        self.assertAllClose(float(cos(50)), 0.0, atol=1e-9)
        self.assertAllClose(float(cos(0)), 0.1)
        strategy = tf.distribute.get_strategy()
        nets = [_net(1), _net(2)]
        opts = [optimizers.TorchSGD(0.1, momentum=0.9) for _ in nets]
        trainer = trainer_lib.Trainer(nets, opts, strategy, global_batch_size=4)
        images = tf.random.uniform((4, 32, 32, 3), 0, 255, seed=1)
        labels = tf.constant([0, 1, 2, 3])
        ds = tf.data.Dataset.from_tensors((images, labels)).repeat()
        trainer.train_loop([iter(ds), iter(ds)], 1)
        slots = [v.numpy().copy() for v in opts[0].variables]
        grafter_lib.Grafter(nets).graft_step()
        for x, v in zip(slots, opts[0].variables):
            self.assertAllClose(x, v.numpy(), atol=0, rtol=0)

    def test_invalid_filter_counts(self):
        net = _net(1)
        conv = net.get_layer("stem_conv")
        kernel = conv.kernel.numpy()
        kernel[..., 0] = 0.001 / kernel[..., 0].size  # L1 = 0.001
        kernel[..., 1] = 0.05 / kernel[..., 1].size  # L1 = 0.05
        conv.kernel.assign(kernel)
        grafter = grafter_lib.Grafter([net, _net(2)])
        counts = grafter.invalid_filters(0)
        self.assertEqual(counts["below"]["0.01"], 1)
        self.assertEqual(counts["below"]["0.1"], 2)
        widths = [net.get_layer(n).kernel.shape[-1] for n in grafter.plan.convs]
        self.assertEqual(counts["total_filters"], sum(widths))

    def test_resnet32_filter_total_matches_reference(self):
        grafter = grafter_lib.Grafter(
            [_net(1, "resnet32", 1.0), _net(2, "resnet32", 1.0)]
        )
        self.assertEqual(grafter.invalid_filters(0)["total_filters"], 1136)

    def test_bad_arguments(self):
        nets = [_net(1), _net(2)]
        with self.assertRaisesRegex(ValueError, "criterion"):
            grafter_lib.Grafter(nets, criterion="kl")
        with self.assertRaisesRegex(ValueError, "level"):
            grafter_lib.Grafter(nets, level="block")
        with self.assertRaisesRegex(ValueError, "a"):
            grafter_lib.Grafter(nets, a=2.0)
        with self.assertRaisesRegex(ValueError, "at least 2"):
            grafter_lib.Grafter(nets[:1])

    def test_l1_criterion_uses_layer_l1(self):
        a, b = _net(1), _net(2)
        grafter = grafter_lib.Grafter([a, b], criterion="l1")
        info = grafter.information(0)
        k = a.get_layer(grafter.plan.sources[0]).kernel
        self.assertAllClose(info[0], criteria.l1(k.value), rtol=1e-6)


def _vgg_like(seed, width=8):
    """conv(bias)-BN-ReLU x2, max-pool, conv(bias)-BN-ReLU, GAP, Dense."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = inputs
    for i in range(3):
        x = keras.layers.Conv2D(
            width,
            3,
            padding="same",
            bias_initializer="random_uniform",
            name=f"conv{i}",
        )(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU()(x)
        if i == 1:
            x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="fc")(x))


def _layer_values(net):
    return {
        layer.name: [w.numpy().copy() for w in layer.weights]
        for layer in net.layers
        if layer.weights
    }


class ScopeTest(tf.test.TestCase, parameterized.TestCase):
    """`scope="conv_bn"`: the reference VGG16 script's layer level."""

    def test_conv_bn_blends_kernels_and_bn_only(self):
        a, b = _vgg_like(1), _vgg_like(2)
        _perturb_bn(a, 1)
        _perturb_bn(b, 2)
        for k, net in enumerate((a, b)):
            beta = net.get_layer("bn1").beta
            beta.assign(np.full(beta.shape, k + 0.5, "float32"))
        grafter = grafter_lib.Grafter([a, b], scope="conv_bn")
        self.assertEqual(grafter.plan.sources, ("conv0", "conv1", "conv2"))
        info = [[float(x) for x in grafter.information(i)] for i in (0, 1)]
        before = [_layer_values(a), _layer_values(b)]
        grafter.graft_step()
        after = [_layer_values(a), _layer_values(b)]
        for i, p in ((0, 1), (1, 0)):
            own, peer, new = before[i], before[p], after[i]
            # Untouched, bit for bit: the classifier and the conv biases.
            for x, y in zip(new["fc"], own["fc"]):
                self.assertAllEqual(x, y)
            for k in range(3):
                self.assertAllEqual(new[f"conv{k}"][1], own[f"conv{k}"][1])
                d = info[i][k] - info[p][k]
                alpha = round(0.4 / math.pi * math.atan(500 * d) + 0.5, 2)
                # The kernel and all four BN tensors use the conv's alpha.
                blended = [(f"conv{k}", 0)] + [(f"bn{k}", j) for j in range(4)]
                for layer, j in blended:
                    x, y = own[layer][j], peer[layer][j]
                    expected = alpha * x + (1 - alpha) * y
                    self.assertAllClose(new[layer][j], expected, atol=1e-6)
        # N = 2: conv and BN tensors collapse to one value, fc does not.
        self.assertAllClose(after[0]["conv2"][0], after[1]["conv2"][0])
        self.assertAllClose(after[0]["bn2"][3], after[1]["bn2"][3])
        self.assertGreater(
            np.abs(after[0]["fc"][0] - after[1]["fc"][0]).max(), 1e-3
        )

    def test_all_scope_blends_biases_and_classifier(self):
        a, b = _vgg_like(1), _vgg_like(2)
        fc, bias = a.get_layer("fc").kernel.numpy(), a.get_layer("conv0").bias
        bias = bias.numpy()
        grafter_lib.Grafter([a, b]).graft_step()
        self.assertGreater(np.abs(a.get_layer("fc").kernel - fc).max(), 1e-4)
        self.assertGreater(np.abs(a.get_layer("conv0").bias - bias).max(), 0)

    def test_vgg16_plan_leaves_biases_and_fc_out(self):
        net = _net(1, name="vgg16", width=0.125)
        plan = grafter_lib.make_plan(net, scope="conv_bn")
        full = grafter_lib.make_plan(net)
        self.assertEqual(plan.scope, "conv_bn")
        self.assertEqual(full.scope, "all")
        self.assertNotIn(None, full.tensor_source)
        index = 0
        kept = []
        for name in plan.layers:
            for w in net.get_layer(name).weights:
                if plan.tensor_source[index] is None:
                    kept.append((name, w.name))
                index += 1
        expected = [(f"conv{i}", "bias") for i in range(13)]
        expected += [("fc", "kernel"), ("fc", "bias")]
        self.assertEqual(kept, expected)
        # The alpha map itself does not depend on the scope.
        self.assertEqual(plan.sources, full.sources)
        for t, src in enumerate(plan.tensor_source):
            if src is not None:
                self.assertEqual(src, full.tensor_source[t])
        self.assertEqual(plan.units, full.units)

    def test_identical_nets_unchanged(self):
        a, b = _vgg_like(3), _vgg_like(3)
        before = _layer_values(a)
        grafter_lib.Grafter([a, b], scope="conv_bn").graft_step()
        for name, values in _layer_values(a).items():
            for x, y in zip(values, before[name]):
                self.assertAllEqual(x, y)

    def test_job_resolves_auto_to_the_reference_script(self):
        self.assertEqual(graft_job.resolve_scope("auto", "vgg16"), "conv_bn")
        for name in ("resnet56", "resnet56_leaky", "mobilenetv2", "resnet18"):
            self.assertEqual(graft_job.resolve_scope("auto", name), "all")
        self.assertEqual(graft_job.resolve_scope("all", "vgg16"), "all")
        self.assertEqual(
            graft_job.resolve_scope("conv_bn", "resnet56"), "conv_bn"
        )
        self.assertEqual(GraftConfig().scope, "auto")
        with self.assertRaisesRegex(ConfigError, "--graft_scope=fc"):
            GraftConfig(scope="fc")

    def test_bad_scope(self):
        nets = [_vgg_like(1), _vgg_like(2)]
        with self.assertRaisesRegex(ValueError, "scope='fc'"):
            grafter_lib.Grafter(nets, scope="fc")
        keras.utils.set_random_seed(0)
        dense = [
            keras.Sequential(
                [keras.Input((4,)), keras.layers.Dense(2, name="d")]
            )
            for _ in range(2)
        ]
        with self.assertRaisesRegex(ValueError, "selects no tensor"):
            grafter_lib.Grafter(dense, scope="conv_bn")
        # A dense-only model grafts whole under the default scope.
        grafter_lib.Grafter(dense).graft_step()


def _user_model(seed):
    """A user's own model: plain Keras layers, names of its own choosing."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="a")(inputs)
    x = keras.layers.BatchNormalization(name="b")(x)
    y = keras.layers.ReLU()(x)
    y = keras.layers.Conv2D(8, 3, padding="same", name="c")(y)
    y = keras.layers.BatchNormalization(name="d")(y)
    x = keras.layers.ReLU()(keras.layers.Add()([x, y]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(4, name="e")(x)
    return keras.Model(inputs, outputs)


class UserModelGraftTest(tf.test.TestCase):
    def test_plain_keras_model(self):
        a, b = _user_model(1), _user_model(2)
        _perturb_bn(a, 1)
        _perturb_bn(b, 2)
        grafter = grafter_lib.Grafter([a, b])
        source_of = {
            layer: grafter.plan.sources[src]
            for layer, src in zip(
                grafter.plan.tensor_layer, grafter.plan.tensor_source
            )
        }
        self.assertEqual(
            source_of, {"a": "a", "b": "a", "c": "c", "d": "c", "e": "c"}
        )
        grafter.graft_step()
        for x, y in zip(_values(a), _values(b)):
            self.assertAllClose(x, y, atol=1e-6)


def _auto_named_model(filters=8):
    """A user's model with Keras's auto-generated layer names."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    y = keras.layers.ReLU()(x)
    y = keras.layers.Conv2D(filters, 3, padding="same")(y)
    y = keras.layers.BatchNormalization()(y)
    if filters == 8:
        y = keras.layers.Add()([x, y])
    y = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(y))
    return keras.Model(inputs, keras.layers.Dense(4)(y))


def _auto_named_sequential():
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )


class TopologyMatchTest(tf.test.TestCase, parameterized.TestCase):
    """Nets are paired by graph position, never by layer names."""

    @parameterized.named_parameters(
        ("functional", _auto_named_model),
        ("sequential", _auto_named_sequential),
    )
    def test_auto_named_nets_graft(self, make):
        keras.utils.set_random_seed(3)
        nets = [make(), make(), make()]
        names = [[w.path for w in n.weights] for n in nets]
        self.assertNotEqual(names[0], names[1])  # auto names differ
        for i, n in enumerate(nets):
            _perturb_bn(n, i)
        grafter = grafter_lib.Grafter(nets)
        # Each net's plan tensors are that net's own weights, in net 0's
        # order: every net's own first conv kernel comes first.
        for net, variables in zip(nets, grafter._variables):
            first_conv = next(
                layer
                for layer in net.layers
                if isinstance(layer, keras.layers.Conv2D)
            )
            self.assertIs(variables[0], first_conv.kernel)
            self.assertEqual(
                {id(v) for v in variables}, {id(v) for v in net.weights}
            )
        before = [_values(n) for n in nets]
        info = [
            [float(x) for x in grafter.information(i)] for i in range(3)
        ]
        grafter.graft_step()
        # Ring: net i receives from net i-1, alpha from its own and the
        # peer's information about the conv the tensor inherits from.
        plan = grafter.plan
        for i, p in enumerate((2, 0, 1)):
            after = _values(nets[i])
            for t, src in enumerate(plan.tensor_source):
                d = info[i][src] - info[p][src]
                alpha = round(0.4 / math.pi * math.atan(500 * d) + 0.5, 2)
                expected = alpha * before[i][t] + (1 - alpha) * before[p][t]
                self.assertAllClose(after[t], expected, atol=1e-6)
        # Statistics are keyed by each net's own layer names.
        conv_names = [
            layer.name
            for layer in nets[1].layers
            if isinstance(layer, keras.layers.Conv2D)
        ]
        self.assertEqual(list(grafter.layer_entropies(1)), conv_names)

    def test_readme_example_two_nets_become_equal(self):
        keras.utils.set_random_seed(0)
        nets = [_auto_named_model() for _ in range(2)]
        grafter_lib.Grafter(nets, criterion="entropy").graft_step()
        for x, y in zip(_values(nets[0]), _values(nets[1])):
            self.assertAllClose(x, y, atol=1e-6)

    def test_different_architectures_name_the_first_mismatch(self):
        nets = [_auto_named_model(), _auto_named_model(filters=16)]
        first = nets[0].layers[4].name  # the second conv, 3x3x8->8
        second = nets[1].layers[4].name  # 3x3x8->16
        with self.assertRaises(ValueError) as raised:
            grafter_lib.Grafter(nets)
        self.assertEqual(
            str(raised.exception),
            f"net 1 layer 3 ('{second}', Conv2D 3x3x8->16) does not match "
            f"net 0 layer 3 ('{first}', Conv2D 3x3x8->8)",
        )

    def test_same_layers_other_shapes_say_what_differs(self):
        def make(padding):
            return keras.Sequential(
                [
                    keras.Input((8, 8, 3)),
                    keras.layers.Conv2D(4, 3, padding=padding),
                    keras.layers.BatchNormalization(),
                    keras.layers.Flatten(),
                ]
            )

        with self.assertRaisesRegex(
            ValueError,
            r"net 2 layer 0 \('conv2d_\d+', Conv2D 3x3x3->4\) does not match "
            r"net 0 layer 0 .*: output shapes \[\(None, 6, 6, 4\)\] vs "
            r"\[\(None, 8, 8, 4\)\]$",
        ):
            grafter_lib.Grafter([make("same"), make("same"), make("valid")])

    def test_subclassed_model_is_refused_with_the_way_out(self):
        class Net(keras.Model):
            def __init__(self):
                super().__init__()
                self.conv = keras.layers.Conv2D(2, 3)

            def call(self, x):
                return self.conv(x)

        nets = [Net(), Net()]
        for net in nets:
            net(tf.zeros((1, 8, 8, 3)))
        with self.assertRaisesRegex(
            ValueError, r"subclassed.*keras\.Model\(inputs, outputs\)"
        ):
            grafter_lib.Grafter(nets)

    def test_errors_name_python_arguments(self):
        nets = [_auto_named_sequential(), _auto_named_sequential()]
        checks = (
            (dict(nets=nets[:1]), "len(nets)=1"),
            (dict(nets=nets, criterion="kl"), "criterion=kl"),
            (dict(nets=nets, level="block"), "level=block"),
            (dict(nets=nets, scope="fc"), "scope='fc'"),
            (dict(nets=nets, a=2.0), "a=2.0"),
            (dict(nets=nets, c=0.0), "c=0.0"),
        )
        for kwargs, expected in checks:
            with self.assertRaises(ValueError) as raised:
                grafter_lib.Grafter(**kwargs)
            message = str(raised.exception)
            self.assertIn(expected, message)
            self.assertNotIn("--", message)
        dense = [
            keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
            for _ in range(2)
        ]
        with self.assertRaisesRegex(ValueError, "scope='conv_bn' selects"):
            grafter_lib.Grafter(dense, scope="conv_bn")
        with self.assertRaisesRegex(ValueError, "level='filter' needs"):
            grafter_lib.Grafter(dense, level="filter")


class MirroredGraftTest(tf.test.TestCase):
    def test_graft_keeps_replicas_identical(self):
        strategy = devices.mirrored_strategy()
        with strategy.scope():
            a, b = _net(1), _net(2)
        expected_a = None
        va, vb = _values(a), _values(b)
        grafter = grafter_lib.Grafter([a, b])
        expected_a = va
        grafter.graft_step()
        for net in (a, b):
            for v in net.weights:
                copies = strategy.experimental_local_results(v.value)
                self.assertAllClose(copies[0], copies[1], atol=0, rtol=0)
        # N = 2: both nets end equal; the blend moved net 0 off its start.
        moved = max(np.abs(x - y).max() for x, y in zip(expected_a, _values(a)))
        self.assertGreater(moved, 0)
        for x, y in zip(_values(a), _values(b)):
            self.assertAllClose(x, y, atol=1e-6)
        del vb


if __name__ == "__main__":
    tf.test.main()
