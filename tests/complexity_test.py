"""Tests for tfgraft.complexity: per-paper FLOPs/params conventions."""

import keras
import pytest
import tensorflow as tf
from absl.testing import parameterized

from tfgraft import complexity
from tfgraft import models

L = keras.layers


def chain_model(bias=True):
    """Conv(3->4, 3x3, same) BN ReLU MaxPool(2) Flatten Dense(5) on 8x8."""
    x = keras.Input((8, 8, 3))
    y = L.Conv2D(4, 3, padding="same", use_bias=bias, name="conv")(x)
    y = L.BatchNormalization(name="bn")(y)
    y = L.ReLU(name="relu")(y)
    y = L.MaxPooling2D(2, name="pool")(y)
    y = L.Flatten(name="flatten")(y)
    return keras.Model(x, L.Dense(5, name="fc")(y))


def residual_model():
    """1x1 conv, BN, ReLU, depthwise 3x3, BN, 1x1 conv, Add, GAP, Dense(3)."""
    x = keras.Input((8, 8, 2))
    y = L.Conv2D(4, 1, use_bias=False, name="c0")(x)
    y = L.ReLU(name="r0")(L.BatchNormalization(name="b0")(y))
    h = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(y)
    h = L.BatchNormalization(name="b_dw")(h)
    h = L.Conv2D(4, 1, use_bias=False, name="pw")(h)
    y = L.Add(name="add")([h, y])
    y = L.GlobalAveragePooling2D(name="gap")(y)
    return keras.Model(x, L.Dense(3, name="fc")(y))


def two_conv_model():
    """conv1(3->4) BN ReLU conv2(4->6) BN ReLU MaxPool Flatten Dense(5)."""
    x = keras.Input((8, 8, 3))
    y = L.Conv2D(4, 3, padding="same", use_bias=False, name="conv1")(x)
    y = L.ReLU(name="relu1")(L.BatchNormalization(name="bn1")(y))
    y = L.Conv2D(6, 3, padding="same", use_bias=False, name="conv2")(y)
    y = L.ReLU(name="relu2")(L.BatchNormalization(name="bn2")(y))
    y = L.MaxPooling2D(2, name="pool")(y)
    y = L.Flatten()(y)
    return keras.Model(x, L.Dense(5, name="fc")(y))


class HookedLayer(L.Layer):
    """Weighted identity that prices itself under "pff" only."""

    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=(3,), initializer="ones")

    def call(self, x):
        return x

    def complexity(self, convention, input_shape, output_shape):
        if convention != "pff":
            return None
        # The hook sees batch 1 and the active channels.
        return 1000 + input_shape[-1], output_shape[0]


class MaskCountingLayer(L.Layer):
    """Stand-in for a compacted stripe layer with a boolean mask."""

    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=(2,), initializer="ones")
        self.mask = self.add_weight(
            name="mask", shape=(5,), initializer="ones", trainable=False
        )

    def call(self, x):
        return x

    def reference_param_count(self):
        return 2 + 5


class HandBuiltCountTest(tf.test.TestCase, parameterized.TestCase):
    # Hand counts for chain_model(): conv MACs 3*3*3*4 * 8*8 = 6912, conv
    # params 108 + 4 bias; BN on 256 values, 8 params (gamma, beta); ReLU 256
    # values; pool 2x2 -> 4*4*4 = 64 outputs; Dense 64 -> 5: 320 MACs, 325
    # params.
    @parameterized.named_parameters(
        ("macs", "macs", 6912 + 320, 112 + 8 + 325),
        # 2*6912 + 2*256 (BN) + 256 (ReLU) + 4*64 (pool) + 2*320 + 5 (FC).
        ("pff", "pff", 13824 + 512 + 256 + 256 + 645, 112 + 8 + 325),
        # Kernel only, BN 2*256 / 4*4, FC 320 / 325.
        ("ekg", "ekg", 6912 + 512 + 320, 108 + 16 + 325),
        # Conv + FC MACs; conv kernel + bias, FC, no BN.
        ("dhp", "dhp", 6912 + 320, 112 + 325),
    )
    def test_chain(self, convention, flops, params):
        result = complexity.count(chain_model(), convention)
        self.assertEqual(result.flops, flops)
        self.assertEqual(result.params, params)
        self.assertEqual(sum(c.flops for c in result.per_layer), flops)

    def test_chain_per_layer_pff(self):
        costs = complexity.count(chain_model(), "pff").as_dict()
        self.assertEqual(
            costs["conv"], complexity.LayerCost("conv", 13824, 112)
        )
        self.assertEqual(costs["bn"].flops, 512)
        self.assertEqual(costs["relu"].flops, 256)
        self.assertEqual(costs["pool"].flops, 256)
        self.assertEqual(costs["fc"], complexity.LayerCost("fc", 645, 325))
        self.assertNotIn("flatten", costs)  # free layers are left out
        self.assertEqual(
            [c.name for c in complexity.count(chain_model()).per_layer],
            ["conv", "bn", "fc"],
        )

    def test_pff_relu_flag(self):
        model = chain_model()
        auto = complexity.count(model, "pff").flops
        off = complexity.count(model, "pff", count_relu=False).flops
        self.assertEqual(auto - off, 256)

    # Hand counts for residual_model(): c0 2*4*64 = 512 MACs / 8 params;
    # depthwise 9*4*64 = 2304 / 36; pw 4*4*64 = 1024 / 16; two BNs on 256
    # values (8 params each); GAP on 256 values; FC 4 -> 3: 12 MACs, 15.
    @parameterized.named_parameters(
        ("macs", "macs", {}, 512 + 2304 + 1024 + 12, 8 + 36 + 16 + 16 + 15),
        # An Add layer: ReLU and global pooling not counted (functional in
        # the reference ResNets).
        ("pff_auto", "pff", {}, 2 * 3840 + 1024 + 27, 91),
        (
            "pff_forced",
            "pff",
            dict(count_relu=True, count_global_pool=True),
            2 * 3840 + 1024 + 27 + 256 + 256,
            91,
        ),
        ("ekg", "ekg", {}, 3840 + 1024 + 12, 60 + 32 + 15),
        ("dhp", "dhp", {}, 3840 + 12, 60 + 15),
    )
    def test_residual_depthwise(self, convention, kwargs, flops, params):
        result = complexity.count(residual_model(), convention, **kwargs)
        self.assertEqual(result.flops, flops)
        self.assertEqual(result.params, params)

    @parameterized.named_parameters(
        # 3x3, stride 2, multiplier 2 on 8x8x3: 4*4*6 outputs of 9 MACs.
        ("macs", "macs", 9 * 6 * 16, 54 + 6),
        ("pff", "pff", 2 * 9 * 6 * 16, 54 + 6),
        ("ekg", "ekg", 9 * 6 * 16, 54),
    )
    def test_strided_depthwise_multiplier(self, convention, flops, params):
        x = keras.Input((8, 8, 3))
        y = L.DepthwiseConv2D(
            3, strides=2, padding="same", depth_multiplier=2, name="dw"
        )(x)
        result = complexity.count(keras.Model(x, y), convention)
        self.assertEqual((result.flops, result.params), (flops, params))

    def test_grouped_conv(self):
        x = keras.Input((4, 4, 6))
        y = L.Conv2D(6, 3, padding="same", groups=3, use_bias=False)(x)
        result = complexity.count(keras.Model(x, y), "macs")
        # 3x3 kernel over 6/3 inputs for each of 6 outputs at 4x4.
        self.assertEqual(result.flops, 9 * 2 * 6 * 16)
        self.assertEqual(result.params, 108)

    def test_dense_on_feature_map(self):
        x = keras.Input((2, 3, 4))
        y = L.Dense(5)(x)
        result = complexity.count(keras.Model(x, y), "pff")
        self.assertEqual(result.flops, 6 * (2 * 4 * 5 + 5))
        self.assertEqual(result.params, 25)

    def test_active_channels(self):
        model = two_conv_model()
        active = {"conv1": (None, 2), "conv2": (None, 3)}
        # conv1 9*3*2*64, conv2 9*2*3*64, FC (4*4*3) -> 5.
        macs = complexity.count(model, "macs", active_channels=active)
        self.assertEqual(macs.flops, 3456 + 3456 + 240)
        self.assertEqual(macs.params, 54 + 4 + 54 + 6 + 245)
        pff = complexity.count(model, "pff", active_channels=active)
        self.assertEqual(
            pff.flops,
            2 * 6912 + 256 + 128 + 384 + 192 + 4 * 48 + 485,
        )
        self.assertEqual(
            complexity.count(model, "ekg", active_channels=active).params,
            54 + 8 + 54 + 12 + 245,
        )
        full = complexity.count(model, "macs")
        self.assertEqual(full.flops, 6912 + 13824 + 480)
        same = complexity.count(
            model, "macs", active_channels={"conv1": (3, 4), "conv2": (4, 6)}
        )
        self.assertEqual(same, full)

    def test_active_channels_explicit_input(self):
        model = two_conv_model()
        result = complexity.count(
            model, "macs", active_channels={"fc": (10, None)}
        )
        self.assertEqual(result.as_dict()["fc"].flops, 50)
        self.assertEqual(result.as_dict()["fc"].params, 55)

    def test_active_channels_through_depthwise_and_add(self):
        result = complexity.count(
            residual_model(), "macs", active_channels={"c0": (None, 2)}
        )
        costs = result.as_dict()
        self.assertEqual(costs["c0"].flops, 2 * 2 * 64)
        self.assertEqual(costs["dw"].flops, 9 * 2 * 64)
        self.assertEqual(costs["pw"].flops, 2 * 4 * 64)
        # The Add keeps the widest input (pw's 4 channels).
        self.assertEqual(costs["fc"].flops, 12)

    def test_custom_hooks(self):
        x = keras.Input((4, 4, 2))
        y = HookedLayer(name="hooked")(x)
        y = MaskCountingLayer(name="masked")(y)
        model = keras.Model(x, y)
        pff = complexity.count(model, "pff").as_dict()
        self.assertEqual(pff["hooked"], complexity.LayerCost("hooked", 1002, 1))
        self.assertEqual(pff["masked"].params, 7)
        macs = complexity.count(model, "macs").as_dict()
        self.assertEqual(macs["hooked"], complexity.LayerCost("hooked", 0, 3))
        self.assertEqual(macs["masked"].params, 2)
        self.assertEqual(complexity.count(model, "ekg").params, 0)

    def test_shared_layer_counts_flops_per_call(self):
        x = keras.Input((4, 4, 2))
        shared = L.Conv2D(2, 1, use_bias=False, name="shared")
        y = shared(shared(x))
        result = complexity.count(keras.Model(x, y), "macs")
        self.assertEqual(result.flops, 2 * 4 * 16)
        self.assertEqual(result.params, 4)

    def test_input_shape(self):
        x = keras.Input((None, None, 3))
        y = L.Conv2D(4, 3, padding="same", use_bias=False)(x)
        model = keras.Model(x, y)
        with self.assertRaisesRegex(ValueError, "pass input_shape"):
            complexity.count(model)
        for shape in [(6, 6, 3), (1, 6, 6, 3), (5, 6, 6, 3), [(6, 6, 3)]]:
            self.assertEqual(
                complexity.count(model, input_shape=shape).flops, 108 * 36
            )

    def test_input_shape_overrides_static_shape(self):
        model = residual_model()
        result = complexity.count(model, "macs", input_shape=(16, 16, 2))
        # Every conv on 16x16 instead of 8x8; GAP makes the FC size-free.
        self.assertEqual(result.flops, 4 * (512 + 2304 + 1024) + 12)
        self.assertEqual(result.params, 91)
        # The user's model is untouched.
        self.assertLen(model.get_layer("c0")._inbound_nodes, 1)
        self.assertEqual(complexity.count(model, "macs").flops, 3852)

    def test_frozen_layers_still_count(self):
        model = chain_model()
        model.trainable = False
        self.assertEqual(complexity.count(model, "macs").params, 445)

    def test_sequential(self):
        model = keras.Sequential(
            [keras.Input((8, 8, 3)), L.Conv2D(4, 3, padding="same")]
        )
        self.assertEqual(complexity.count(model).flops, 108 * 64)

    def test_errors(self):
        model = chain_model()
        with self.assertRaisesRegex(ValueError, "Unknown complexity"):
            complexity.count(model, "flops")
        with self.assertRaisesRegex(ValueError, "nope"):
            complexity.count(model, active_channels={"nope": (1, 1)})
        with self.assertRaisesRegex(ValueError, "in_active, out_active"):
            complexity.count(model, active_channels={"conv": (1,)})


def _fs_params(model):
    """Filter Skeleton size of the reference: one scalar per (k, k, out)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, L.Conv2D):
            kh, kw = layer.kernel_size
            total += kh * kw * layer.filters
    return total


class ZooCountTest(tf.test.TestCase, parameterized.TestCase):
    def test_pff_resnet56(self):
        model = models.build_model(
            "resnet56", preset="pff", shortcut="projection"
        )
        result = complexity.count(model, "pff")
        self.assertEqual(result.flops, 252_585_226)
        # The reference params include the Filter Skeletons of its stripe
        # convs. Until the zoo is built from StripeConv2D (whose FS is a
        # trainable weight, or whose hooks count it) add them here; then
        # the count itself must equal 874,154.
        fs = _fs_params(model)
        self.assertEqual(fs, 18_384)
        self.assertEqual(result.params + fs, 874_154)

    def test_pff_vgg16(self):
        model = models.build_model("vgg16", preset="pff")
        result = complexity.count(model, "pff")
        # The reference has a no-op AvgPool2d(1) module costing 512 FLOPs
        # (1*1*512*1*1); a Keras VGG without that layer lacks exactly those.
        has_avgpool = any(
            isinstance(layer, (L.AveragePooling2D, L.GlobalAveragePooling2D))
            for layer in model.layers
        )
        expected = 627_358_218 - (0 if has_avgpool else 512)
        self.assertEqual(result.flops, expected)
        fs = _fs_params(model)
        self.assertEqual(fs, 38_016)
        self.assertEqual(result.params + fs, 14_762_058)

    @parameterized.named_parameters(
        ("macs", "macs", {}),
        ("pff_with_activations", "pff", {"count_relu": True}),
        ("dhp", "dhp", {}),
    )
    def test_leaky_twin_counts_like_relu(self, convention, kwargs):
        # LeakyReLU is an activation like ReLU (no weights; `numel` FLOPs
        # where activations count), so every layer costs the same.
        relu = complexity.count(
            models.build_model("resnet56"), convention, **kwargs
        )
        leaky = complexity.count(
            models.build_model("resnet56_leaky"), convention, **kwargs
        )
        self.assertEqual(leaky.per_layer, relu.per_layer)
        self.assertEqual((leaky.flops, leaky.params), (relu.flops, relu.params))
        if kwargs.get("count_relu"):
            self.assertGreater(leaky.as_dict()["stem_relu"].flops, 0)

    def test_ekg_resnet56(self):
        model = models.build_model("resnet56", preset="ekg")
        result = complexity.count(model, "ekg")
        self.assertEqual(result.flops, 126_837_376)
        self.assertEqual(result.params, 860_026)

    @parameterized.named_parameters(
        ("resnet20", "resnet20", "projection"),
        ("vgg16", "vgg16", None),
        ("mobilenetv2", "mobilenetv2", None),
    )
    def test_masked_count_equals_compact_count(self, name, shortcut):
        full = models.build_model(name, shortcut=shortcut)
        config = models.default_channel_config(name, shortcut=shortcut)
        compact = models.build_model(
            name, shortcut=shortcut, channel_config=config.scaled(0.5)
        )
        active = {
            layer.name: (None, layer.filters)
            for layer in compact.layers
            if isinstance(layer, L.Conv2D)
        }
        for convention in complexity.CONVENTIONS:
            masked = complexity.count(full, convention, active_channels=active)
            real = complexity.count(compact, convention)
            self.assertEqual(masked, real, msg=convention)
            self.assertLess(
                real.flops, complexity.count(full, convention).flops
            )


@pytest.mark.large
class ImageNetCountTest(tf.test.TestCase, parameterized.TestCase):
    """LW-DNA's counter on 224x224 ResNets (several seconds to build)."""

    @parameterized.named_parameters(
        ("resnet18", "resnet18", 1.0, 1.814, None),
        ("resnet34", "resnet34", 1.0, 3.664, None),
        ("resnet50", "resnet50", 1.0, 4.089, 25.50),
        ("resnet50x2", "resnet50", 2.0, 16.117, None),
    )
    def test_dhp_imagenet(self, name, width_mult, gmacs, mparams):
        model = models.build_model(
            name,
            preset="dhp",
            input_shape=(224, 224, 3),
            num_classes=1000,
            width_mult=width_mult,
        )
        result = complexity.count(model, "dhp")
        self.assertEqual(round(result.flops / 1e9, 3), gmacs)
        if mparams is not None:
            self.assertEqual(round(result.params / 1e6, 2), mparams)


if __name__ == "__main__":
    tf.test.main()
