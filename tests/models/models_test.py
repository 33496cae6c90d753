"""Tests for the tfgraft.models zoo: counts, shapes, presets, padding, I/O."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized

from tfgraft.layers import Standardize
from tfgraft.models import ChannelConfig
from tfgraft.models import OptionAShortcut
from tfgraft.models import UnknownModelError
from tfgraft.models import available_models
from tfgraft.models import build_model
from tfgraft.models import default_channel_config
from tfgraft.models import layer_slots
from tfgraft.models import model_family
from tfgraft.testing import test_case

# === Independent parameter arithmetic (from the architecture text) ===


def _conv(k, c_in, c_out, bias=False):
    return k * k * c_in * c_out + (c_out if bias else 0)


def _bn(c):
    return 2 * c  # gamma and beta are trainable; moving stats are not.


def _fc(c_in, c_out):
    return c_in * c_out + c_out


def count_resnet_cifar(depth, projection, classes=10):
    n = (depth - 2) // 6
    total = _conv(3, 3, 16) + _bn(16)
    c_in = 16
    for s, width in enumerate((16, 32, 64)):
        for b in range(n):
            total += 2 * _bn(width)
            total += _conv(3, c_in, width) + _conv(3, width, width)
            if s > 0 and b == 0 and projection:
                total += _conv(1, c_in, width) + _bn(width)
            c_in = width
    return total + _fc(64, classes)


def count_vgg16(bias, classes=10):
    widths = [64, 64, 128, 128, 256, 256, 256] + [512] * 6
    total, c_in = 0, 3
    for width in widths:
        total += _conv(3, c_in, width, bias) + _bn(width)
        c_in = width
    return total + _fc(512, classes)


def count_mobilenetv2(classes=10):
    stages = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2)]
    stages += [(6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    total = _conv(3, 3, 32) + _bn(32)
    c_in = 32
    for t, c, n, s in stages:
        for b in range(n):
            stride = s if b == 0 else 1
            mid = t * c_in
            total += _conv(1, c_in, mid) + _bn(mid)  # expand
            total += 9 * mid + _bn(mid)  # depthwise
            total += _conv(1, mid, c) + _bn(c)  # project
            if stride == 1 and c_in != c:
                total += _conv(1, c_in, c) + _bn(c)
            c_in = c
    total += _conv(1, 320, 1280) + _bn(1280)
    return total + _fc(1280, classes)


def count_resnet_imagenet(blocks, bottleneck, classes=1000):
    total = _conv(7, 3, 64) + _bn(64)
    c_in = 64
    for s, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks)):
        out = planes * (4 if bottleneck else 1)
        for b in range(n):
            if bottleneck:
                total += _conv(1, c_in, planes) + _conv(3, planes, planes)
                total += _conv(1, planes, out) + 2 * _bn(planes) + _bn(out)
            else:
                total += _conv(3, c_in, planes) + _conv(3, planes, out)
                total += _bn(planes) + _bn(out)
            if (s > 0 and b == 0) or c_in != out:
                total += _conv(1, c_in, out) + _bn(out)
            c_in = out
    return total + _fc(c_in, classes)


def trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


class ParameterCountTest(tf.test.TestCase, parameterized.TestCase):
    # Reference counts (PyTorch `sum(p.numel())` of akamaster's option-A
    # ResNets, EKG §3.2, the grafting repo's VGG16 / kuangliu MobileNetV2).
    @parameterized.named_parameters(
        ("resnet20_A", "resnet20", "grafting", None, 269_722),
        ("resnet32_A", "resnet32", "grafting", None, 464_154),
        ("resnet44_A", "resnet44", "grafting", None, 658_586),
        ("resnet56_A", "resnet56", "grafting", None, 853_018),
        ("resnet110_A", "resnet110", "grafting", None, 1_727_962),
        ("resnet20_proj", "resnet20", "grafting", "projection", 272_474),
        # Leaky ReLU adds no weights: the leaky twins count the same.
        ("resnet32_leaky", "resnet32_leaky", "grafting", None, 464_154),
        ("resnet56_leaky", "resnet56_leaky", "grafting", None, 853_018),
        ("resnet110_leaky", "resnet110_leaky", "grafting", None, 1_727_962),
    )
    def test_cifar_resnet(self, name, preset, shortcut, expected):
        model = build_model(name, preset=preset, shortcut=shortcut)
        depth = int(name.removesuffix("_leaky")[len("resnet") :])
        projection = preset != "grafting" or shortcut == "projection"
        self.assertEqual(count_resnet_cifar(depth, projection), expected)
        self.assertEqual(trainable_count(model), expected)

    def test_ekg_resnet56_total_params(self):
        # EKG also reports 860,026 incl. the BN moving statistics.
        model = build_model("resnet56", preset="ekg")
        self.assertEqual(count_resnet_cifar(56, projection=True), 855_770)
        self.assertEqual(trainable_count(model), 855_770)
        self.assertEqual(model.count_params(), 860_026)

    @parameterized.named_parameters(
        ("grafting_bias", "grafting", True, 14_728_266),
        ("pff_no_bias", "pff", False, 14_724_042),
    )
    def test_vgg16(self, preset, bias, expected):
        model = build_model("vgg16", preset=preset)
        self.assertEqual(count_vgg16(bias), expected)
        self.assertEqual(trainable_count(model), expected)

    def test_mobilenetv2(self):
        model = build_model("mobilenetv2")
        self.assertEqual(count_mobilenetv2(), 2_296_922)
        self.assertEqual(trainable_count(model), 2_296_922)

    @pytest.mark.large
    def test_imagenet_resnets(self):
        # torchvision resnet18/34/50 `sum(p.numel())` with 1000 classes.
        cases = (
            ("resnet18", (2, 2, 2, 2), False, 11_689_512),
            ("resnet34", (3, 4, 6, 3), False, 21_797_672),
            ("resnet50", (3, 4, 6, 3), True, 25_557_032),
        )
        for name, blocks, bottleneck, expected in cases:
            model = build_model(name, num_classes=1000, input_shape=(64, 64, 3))
            self.assertEqual(
                count_resnet_imagenet(blocks, bottleneck), expected
            )
            self.assertEqual(trainable_count(model), expected, msg=name)


class BuildTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)

    def test_available_models(self):
        self.assertEqual(
            available_models(),
            [
                "resnet20",
                "resnet32",
                "resnet44",
                "resnet56",
                "resnet110",
                "resnet20_leaky",
                "resnet32_leaky",
                "resnet44_leaky",
                "resnet56_leaky",
                "resnet110_leaky",
                "vgg16",
                "mobilenetv2",
                "resnet18",
                "resnet34",
                "resnet50",
            ],
        )

    def test_model_family(self):
        self.assertEqual(model_family("resnet56"), "resnet_cifar")
        self.assertEqual(model_family("resnet56_leaky"), "resnet_cifar")
        self.assertEqual(model_family("vgg16"), "vgg")
        self.assertEqual(model_family("resnet18"), "resnet_imagenet")

    def test_standardize_uses_mean_std(self):
        model = build_model(
            "resnet20", mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0)
        )
        layer = model.get_layer("standardize")
        out = layer(np.full((1, 2, 2, 3), 255.0, "float32"))
        self.assertAllClose(out[0, 0, 0], [1.0, 3.0, 1.0])

    @parameterized.named_parameters(
        ("resnet20_A", "resnet20", "grafting", "A"),
        ("resnet20_ekg", "resnet20", "ekg", "projection"),
        ("vgg16_pff", "vgg16", "pff", None),
        ("mobilenetv2", "mobilenetv2", "grafting", None),
        ("resnet18_dhp", "resnet18", "dhp", None),
        ("resnet50", "resnet50", "grafting", None),
    )
    def test_custom_config_builds_exact_widths(self, name, preset, shortcut):
        rng = np.random.RandomState(1)
        default = default_channel_config(name)
        widths = {s: int(rng.randint(1, 9)) for s in default.widths}
        if shortcut == "A":
            # Option A only widens the stream; 3 -> 6 -> 11 is not doubling.
            widths.update(stage1=3, stage2=6, stage3=11)
        config = ChannelConfig(name, widths)
        model = build_model(
            name,
            channel_config=config,
            preset=preset,
            shortcut=shortcut,
            num_classes=7,
            model_name="net_0",
        )
        self.assertEqual(model.name, "net_0")
        self.assertIsInstance(model.layers[0], keras.layers.InputLayer)
        self.assertIsInstance(model.layers[1], Standardize)
        slots = layer_slots(name, preset=preset, shortcut=shortcut)
        self.assertNotEmpty(slots)
        for layer_name, slot in slots.items():
            out = model.get_layer(layer_name).output.shape[-1]
            self.assertEqual(out, widths[slot], msg=layer_name)
        # Every width slot is used by at least one layer.
        self.assertEqual(set(slots.values()), set(widths))
        x = np.random.RandomState(0).uniform(0, 255, (2, 32, 32, 3))
        y = model(x.astype("float32"), training=False)
        self.assertEqual(tuple(y.shape), (2, 7))
        self.assertTrue(np.all(np.isfinite(y)))

    def test_layer_names_do_not_depend_on_widths(self):
        small = ChannelConfig(
            "resnet20",
            {s: 2 for s in default_channel_config("resnet20").widths},
        )
        names = [layer.name for layer in build_model("resnet20").layers]
        small_names = [
            layer.name
            for layer in build_model("resnet20", channel_config=small).layers
        ]
        self.assertEqual(names, small_names)
        self.assertIn("stage2_block0_shortcut", names)
        self.assertIn("stage2_block0_conv1_pad", names)

    def test_width_mult_scales_default_and_given_config(self):
        model = build_model("resnet20", width_mult=0.5)
        self.assertEqual(model.get_layer("stem_conv").filters, 8)
        self.assertEqual(model.get_layer("stage3_block2_conv1").filters, 32)
        config = default_channel_config("vgg16", width_mult=0.25)
        self.assertEqual(config.widths["conv12"], 128)
        model = build_model("vgg16", channel_config=config, width_mult=0.5)
        self.assertEqual(model.get_layer("conv0").filters, 8)
        self.assertEqual(model.get_layer("conv12").filters, 64)
        self.assertEqual(model.get_layer("fc").kernel.shape, (64, 10))

    def test_layer_slots(self):
        slots = layer_slots("resnet20", shortcut="projection")
        self.assertEqual(slots["stem_conv"], "stage1")
        self.assertEqual(slots["stage1_block1_conv2"], "stage1")
        self.assertEqual(slots["stage2_block0_shortcut_bn"], "stage2")
        self.assertEqual(slots["stage3_block2_bn1"], "stage3/block2/conv1")
        slots = layer_slots("resnet18")
        self.assertEqual(slots["stem_conv"], "stage1")
        slots = layer_slots("mobilenetv2")
        self.assertEqual(slots["stage2_block0_dw_conv"], "stage2/block0/expand")
        self.assertEqual(slots["stage2_block1_project_conv"], "stage2")


def _activations(model):
    return [
        layer
        for layer in model.layers
        if isinstance(layer, (keras.layers.ReLU, keras.layers.LeakyReLU))
    ]


class LeakyTest(tf.test.TestCase, parameterized.TestCase):
    """The `_leaky` CIFAR ResNets (reference `resnet_leaky.py`)."""

    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)

    @parameterized.named_parameters(
        ("A", None), ("projection", "projection")
    )
    def test_twin_of_the_relu_model(self, shortcut):
        relu = build_model("resnet20", width_mult=0.25, shortcut=shortcut)
        leaky = build_model(
            "resnet20_leaky", width_mult=0.25, shortcut=shortcut
        )
        self.assertEqual(
            [layer.name for layer in leaky.layers],
            [layer.name for layer in relu.layers],
        )
        self.assertEqual(
            [tuple(w.shape) for w in leaky.weights],
            [tuple(w.shape) for w in relu.weights],
        )
        relu_acts, leaky_acts = _activations(relu), _activations(leaky)
        self.assertLen(relu_acts, 1 + 2 * 9)  # stem + 2 per block
        self.assertEqual(
            [a.name for a in leaky_acts], [a.name for a in relu_acts]
        )
        for layer in leaky_acts:
            self.assertIsInstance(layer, keras.layers.LeakyReLU)
            self.assertEqual(layer.negative_slope, 0.01)
        for layer in relu_acts:
            self.assertNotIsInstance(layer, keras.layers.LeakyReLU)
        self.assertEqual(
            layer_slots("resnet20_leaky", shortcut=shortcut),
            layer_slots("resnet20", shortcut=shortcut),
        )

    def test_negative_slope_is_applied(self):
        model = build_model("resnet20_leaky", width_mult=0.25)
        probe = keras.Model(
            model.inputs[0],
            [
                model.get_layer("stem_bn").output,
                model.get_layer("stem_relu").output,
                model.get_layer("stage1_block0_add").output,
                model.get_layer("stage1_block0_out").output,
            ],
        )
        x = np.random.RandomState(0).uniform(0, 255, (2, 32, 32, 3))
        bn, act, add, out = probe(x.astype("float32"), training=False)
        bn, add = np.asarray(bn), np.asarray(add)
        self.assertTrue((bn < 0).any())
        self.assertAllClose(act, np.where(bn > 0, bn, 0.01 * bn), atol=1e-6)
        self.assertAllClose(out, np.where(add > 0, add, 0.01 * add), atol=1e-6)

    def test_same_weights_give_other_logits(self):
        relu = build_model("resnet20", width_mult=0.25)
        leaky = build_model("resnet20_leaky", width_mult=0.25)
        leaky.set_weights(relu.get_weights())
        x = np.random.RandomState(0).uniform(0, 255, (2, 32, 32, 3))
        x = x.astype("float32")
        diff = np.abs(leaky(x) - relu(x)).max()
        self.assertGreater(diff, 1e-4)

    def test_channel_config_names_the_leaky_model(self):
        config = default_channel_config("resnet56_leaky", width_mult=0.25)
        self.assertEqual(config.model, "resnet56_leaky")
        self.assertEqual(
            config.widths,
            default_channel_config("resnet56", width_mult=0.25).widths,
        )
        path = os.path.join(self.get_temp_dir(), "leaky.json")
        config.save(path)
        model = build_model(
            "resnet56_leaky", channel_config=ChannelConfig.load(path)
        )
        self.assertEqual(model.get_layer("stem_conv").filters, 4)
        # A config names the network it fits: the ReLU twin's is refused.
        with self.assertRaisesRegex(
            ValueError,
            "^channel config \\(in memory\\): built for model 'resnet56', "
            "got name='resnet56_leaky'$",
        ):
            build_model(
                "resnet56_leaky",
                channel_config=default_channel_config("resnet56"),
            )

    def test_keras_and_saved_model_round_trips(self):
        model = build_model("resnet20_leaky", width_mult=0.25)
        x = np.random.RandomState(0).uniform(0, 255, (2, 32, 32, 3))
        x = x.astype("float32")
        model(x, training=True)
        expected = model(x, training=False)
        loaded = test_case.keras_round_trip(model, self.get_temp_dir())
        self.assertIsInstance(
            loaded.get_layer("stem_relu"), keras.layers.LeakyReLU
        )
        self.assertAllClose(loaded(x, training=False), expected, atol=1e-6)
        reloaded = test_case.saved_model_round_trip(  # keep: owns the vars
            model, os.path.join(self.get_temp_dir(), "export")
        )
        self.assertAllClose(reloaded.serve(x), expected, atol=1e-5)


class ErrorTest(tf.test.TestCase, parameterized.TestCase):
    def test_unknown_model(self):
        with self.assertRaises(UnknownModelError) as ctx:
            build_model("resnet57")
        message = str(ctx.exception)
        self.assertStartsWith(message, "name='resnet57': unknown model")
        self.assertNotIn("--", message)
        self.assertIn("resnet56", message)
        self.assertIsInstance(ctx.exception, ValueError)
        with self.assertRaises(UnknownModelError):
            default_channel_config("vgg19")
        with self.assertRaises(UnknownModelError):
            model_family("resnet56_relu")

    @parameterized.named_parameters(
        ("preset", dict(preset="slim"), "^preset='slim': must be one of"),
        ("shortcut", dict(shortcut="B"), "^shortcut='B': must be one of"),
        ("width_mult", dict(width_mult=0.0), "width_mult"),
        ("mean_len", dict(mean=(0.5,)), "input_shape"),
        (
            "mean_on_255_scale",
            dict(mean=(125.3, 123.0, 113.9)),
            r"^Standardize 'standardize': mean=\(125.3, 123.0, 113.9\): "
            r"each must be in \[0, 1\]",
        ),
        (
            "std_on_255_scale",
            dict(std=(63.0, 62.1, 66.7)),
            r"^Standardize 'standardize': std=\(63.0, 62.1, 66.7\): each "
            r"must be in \(0, 1\]",
        ),
    )
    def test_bad_arguments(self, kwargs, fragment):
        with self.assertRaisesRegex(ValueError, fragment):
            build_model("resnet20", **kwargs)

    def test_shortcut_only_where_it_exists(self):
        for name, message in (
            (
                "vgg16",
                "shortcut='A': shortcut types apply to ResNets only, not to "
                "name='vgg16'",
            ),
            (
                "resnet18",
                "shortcut='A' exists for CIFAR ResNets only; name='resnet18' "
                "uses projection shortcuts",
            ),
        ):
            with self.assertRaises(ValueError) as raised:
                build_model(name, shortcut="A")
            self.assertEqual(str(raised.exception), message)


class SerializationTest(tf.test.TestCase):
    def test_keras_round_trip_identical_outputs(self):
        keras.utils.set_random_seed(0)
        model = build_model("resnet20", width_mult=0.25)
        x = np.random.RandomState(0).uniform(0, 255, (2, 32, 32, 3))
        x = x.astype("float32")
        # One training-mode call so moving statistics differ from init.
        model(x, training=True)
        loaded = test_case.keras_round_trip(model, self.get_temp_dir())
        self.assertIsInstance(
            loaded.get_layer("stage2_block0_shortcut"), OptionAShortcut
        )
        self.assertAllClose(
            loaded(x, training=False), model(x, training=False), atol=1e-6
        )
        self.assertEqual(
            [layer.name for layer in loaded.layers],
            [layer.name for layer in model.layers],
        )


if __name__ == "__main__":
    tf.test.main()
