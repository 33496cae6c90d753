"""Tests for the zoo's presets, padding, conv factory and option A layer."""

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tfgraft.models import OptionAShortcut
from tfgraft.models import build_model
from tfgraft.models import common
from tfgraft.testing import test_case


class PresetTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)

    def _std(self, model, layer):
        return float(np.std(model.get_layer(layer).kernel.numpy()))

    def test_grafting_resnet_he_fan_in(self):
        model = build_model("resnet20")
        # 3*3*64 fan_in: std sqrt(2 / 576); 36,864 samples => ~0.4 % error.
        self.assertAllClose(
            self._std(model, "stage3_block1_conv1"), (2 / 576) ** 0.5, rtol=0.03
        )
        self.assertAllClose(self._std(model, "fc"), (2 / 64) ** 0.5, rtol=0.2)
        self.assertFalse(model.get_layer("stem_conv").use_bias)
        bias = model.get_layer("fc").bias.numpy()
        self.assertLessEqual(np.abs(bias).max(), 1 / 8)
        self.assertGreater(np.abs(bias).max(), 0)
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                self.assertAllEqual(
                    layer.gamma.numpy(), np.ones(layer.gamma.shape)
                )
                self.assertEqual(layer.momentum, 0.9)
                self.assertEqual(layer.epsilon, 1e-5)

    def test_grafting_vgg_torch_default_with_bias(self):
        model = build_model("vgg16", width_mult=0.25)
        conv = model.get_layer("conv5")  # 64 -> 64 channels, fan_in 576
        bound = 1 / 576**0.5
        kernel, bias = conv.kernel.numpy(), conv.bias.numpy()
        self.assertLessEqual(np.abs(kernel).max(), bound)
        self.assertGreater(np.abs(kernel).max(), 0.95 * bound)
        self.assertLessEqual(np.abs(bias).max(), bound)
        self.assertGreater(np.abs(bias).max(), 0.5 * bound)

    def test_grafting_mobilenet_depthwise_uses_torch_fans(self):
        model = build_model("mobilenetv2", width_mult=0.5)
        kernel = model.get_layer("stage4_block1_dw_conv").kernel.numpy()
        # PyTorch depthwise fan_in is 3*3 = 9 => U(+-1/3), whatever C is.
        self.assertLessEqual(np.abs(kernel).max(), 1 / 3)
        self.assertGreater(np.abs(kernel).max(), 0.3)
        self.assertFalse(model.get_layer("stage4_block1_expand_conv").use_bias)

    def test_pff(self):
        model = build_model("resnet20", preset="pff", width_mult=0.5)
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                self.assertAllClose(
                    layer.gamma.numpy(), np.full(layer.gamma.shape, 0.5)
                )
        self.assertIn(
            "stage2_block0_shortcut_conv",
            [layer.name for layer in model.layers],
        )
        self.assertAllClose(self._std(model, "fc"), 0.01, rtol=0.2)
        vgg = build_model("vgg16", preset="pff", width_mult=0.25)
        self.assertFalse(vgg.get_layer("conv3").use_bias)

    def test_ekg(self):
        model = build_model("resnet20", preset="ekg")
        self.assertAllEqual(
            model.get_layer("stage1_block0_bn2").gamma, np.zeros(16)
        )
        self.assertAllEqual(
            model.get_layer("stage1_block0_bn1").gamma, np.ones(16)
        )
        self.assertAllEqual(
            model.get_layer("stage2_block0_shortcut_bn").gamma, np.ones(32)
        )
        self.assertAllEqual(model.get_layer("fc").bias, np.zeros(10))
        self.assertAllClose(self._std(model, "fc"), 0.01, rtol=0.2)
        # VarianceScaling(2, fan_out=3*3*64, truncated normal) keeps std.
        self.assertAllClose(
            self._std(model, "stage3_block1_conv1"), (2 / 576) ** 0.5, rtol=0.05
        )
        conv = model.get_layer("stage2_block0_conv1")
        self.assertEqual(conv.padding, "same")
        self.assertNotIn(
            "stage2_block0_conv1_pad", [layer.name for layer in model.layers]
        )

    def test_dhp_he_fan_out(self):
        model = build_model("resnet18", preset="dhp", width_mult=0.5)
        # stage2 conv2 at half width: 3*3*64 fan_out => std sqrt(2 / 576).
        self.assertAllClose(
            self._std(model, "stage2_block1_conv2"), (2 / 576) ** 0.5, rtol=0.03
        )


class PaddingTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        # 16x16 -> 8x8 at stride 2. PyTorch pads 1 on every side; TF "same"
        # needs a total of 1 and puts it bottom/right.
        ("grafting", "grafting", (1, 1, 1, 1)),
        ("ekg", "ekg", (0, 1, 0, 1)),
    )
    def test_strided_conv_matches_reference_padding(self, preset, pads):
        keras.utils.set_random_seed(3)
        model = build_model(
            "resnet20", preset=preset, width_mult=0.25, input_shape=(16, 16, 3)
        )
        block_in = model.get_layer("stage1_block2_out").output
        conv = model.get_layer("stage2_block0_conv1")
        probe = keras.Model(model.input, [block_in, conv.output])
        x = np.random.RandomState(0).uniform(0, 255, (2, 16, 16, 3))
        inp, out = probe(x.astype("float32"), training=False)
        kernel = conv.kernel.numpy().astype(np.float64)
        inp = inp.numpy().astype(np.float64)
        expected = test_case.numpy_conv2d(inp, kernel, 2, pads)
        self.assertEqual(out.shape, expected.shape)
        self.assertAllClose(out, expected, rtol=5e-4, atol=1e-4)
        if preset == "grafting":
            # And it really differs from TF's one-sided padding.
            other = test_case.numpy_conv2d(inp, kernel, 2, (0, 1, 0, 1))
            self.assertGreater(np.abs(other - expected).max(), 1e-2)

    def test_imagenet_stem_pool_symmetric(self):
        model = build_model(
            "resnet18", width_mult=0.125, input_shape=(32, 32, 3)
        )
        pad = model.get_layer("stem_pool_pad")
        self.assertEqual(pad.padding, ((1, 1), (1, 1)))
        self.assertEqual(
            model.get_layer("stem_conv_pad").padding, ((3, 3), (3, 3))
        )
        self.assertEqual(model.get_layer("stem_pool").output.shape[1], 8)


class OptionAShortcutTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("double", 4, 8, (2, 2)),
        ("uneven", 3, 8, (2, 3)),
        ("same", 4, 4, (0, 0)),
    )
    def test_matches_numpy(self, c_in, c_out, pads):
        x = np.random.RandomState(0).randn(2, 7, 7, c_in).astype("float32")
        y = OptionAShortcut(c_out, 2)(x)
        expected = np.pad(x[:, ::2, ::2, :], [(0, 0), (0, 0), (0, 0), pads])
        self.assertAllEqual(y, expected)

    def test_reference_planes_over_four(self):
        # The reference pads planes // 4 zero channels on each side.
        x = np.ones((1, 4, 4, 16), "float32")
        y = OptionAShortcut(32)(x).numpy()
        self.assertAllEqual(y[..., :8], np.zeros((1, 2, 2, 8)))
        self.assertAllEqual(y[..., 8:24], np.ones((1, 2, 2, 16)))
        self.assertAllEqual(y[..., 24:], np.zeros((1, 2, 2, 8)))

    def test_config_and_errors(self):
        layer = OptionAShortcut(8, strides=2, name="sc")
        again = test_case.config_round_trip(layer)
        self.assertIsInstance(again, OptionAShortcut)
        self.assertEqual((again.filters, again.strides), (8, 2))
        with self.assertRaisesRegex(ValueError, "filters"):
            OptionAShortcut(0)
        with self.assertRaisesRegex(ValueError, "cannot zero-pad"):
            OptionAShortcut(2)(np.zeros((1, 4, 4, 3), "float32"))


class ActivationTest(tf.test.TestCase, parameterized.TestCase):
    def _activations(self, model):
        return [
            layer
            for layer in model.layers
            if isinstance(layer, (keras.layers.ReLU, keras.layers.LeakyReLU))
        ]

    @parameterized.named_parameters(
        ("mobilenetv2", "mobilenetv2", 1 + 2 * 17 + 1),
        ("resnet18", "resnet18", 1 + 2 * 8),
        ("vgg16", "vgg16", 13),
    )
    def test_other_models_keep_relu(self, name, count):
        model = build_model(name, width_mult=0.125)
        acts = self._activations(model)
        self.assertLen(acts, count)
        for layer in acts:
            self.assertNotIsInstance(layer, keras.layers.LeakyReLU)
            self.assertEqual(layer.negative_slope, 0.0)

    @parameterized.named_parameters(
        ("grafting", "grafting"), ("pff", "pff"), ("ekg", "ekg")
    )
    def test_leaky_is_independent_of_the_preset(self, preset):
        model = build_model("resnet20_leaky", preset=preset, width_mult=0.25)
        acts = self._activations(model)
        self.assertLen(acts, 19)
        for layer in acts:
            self.assertIsInstance(layer, keras.layers.LeakyReLU)
            self.assertEqual(layer.negative_slope, common.LEAKY_RELU_SLOPE)
        self.assertEqual(common.LEAKY_RELU_SLOPE, 0.01)  # PyTorch default

    def test_builder_checks_activation(self):
        settings = common.resolve_settings("grafting", common.RESNET_CIFAR)
        with self.assertRaisesRegex(ValueError, "activation='gelu'"):
            common.LayerBuilder(settings, activation="gelu")
        # Zero padding stands in for -inf only after a ReLU.
        builder = common.LayerBuilder(settings, activation="leaky_relu")
        x = keras.Input((8, 8, 4))
        with self.assertRaisesRegex(ValueError, "only after a ReLU"):
            builder.max_pool(x, 3, 2, name="pool")


class ConvLayerFactoryTest(tf.test.TestCase):
    def test_factory_builds_every_regular_conv(self):
        calls = []

        class TaggedConv(keras.layers.Conv2D):
            pass

        def factory(**kwargs):
            calls.append(kwargs)
            return TaggedConv(**kwargs)

        model = build_model("mobilenetv2", width_mult=0.25, conv_layer=factory)
        convs = [
            layer
            for layer in model.layers
            if isinstance(layer, keras.layers.Conv2D)
        ]
        depthwise = [
            layer
            for layer in model.layers
            if isinstance(layer, keras.layers.DepthwiseConv2D)
        ]
        self.assertLen(calls, len(convs))
        self.assertTrue(all(isinstance(layer, TaggedConv) for layer in convs))
        self.assertLen(depthwise, 17)
        self.assertEqual(
            set(calls[0]),
            {
                "filters",
                "kernel_size",
                "strides",
                "padding",
                "use_bias",
                "kernel_initializer",
                "name",
            },
        )
        vgg_calls = []

        def vgg_factory(**kwargs):
            vgg_calls.append(kwargs)
            return keras.layers.Conv2D(**kwargs)

        build_model("vgg16", width_mult=0.125, conv_layer=vgg_factory)
        self.assertIn("bias_initializer", vgg_calls[0])


if __name__ == "__main__":
    tf.test.main()
