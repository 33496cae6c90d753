"""Tests for the LW-DNA Python API: `graph_latent_plan`, `derive_widths`.

A hand-built functional CNN (not from the zoo: a residual add written as
`x + y`, a projection block) is widened, searched and derived; on zoo
models the graph's latent plan is the zoo's (METHODS §4.2 sharing).
"""

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tfgraft import complexity
from tfgraft import lwdna
from tfgraft import models
from tfgraft import surgery
from tfgraft.layers.hyper_conv import HyperConv2D
from tfgraft.testing import test_case


def _my_model(seed=0, widths=(16, 16, 32)):
    keras.utils.set_random_seed(seed)
    layers = keras.layers

    def conv_bn(x, name, filters, strides=1, kernel=3, relu=True):
        x = layers.Conv2D(
            filters, kernel, strides, padding="same", use_bias=False, name=name
        )(x)
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        return layers.ReLU()(x) if relu else x

    stem, inner, stage2 = widths
    inputs = keras.Input((8, 8, 3))
    x = layers.Rescaling(1 / 255.0)(inputs)
    x = conv_bn(x, "stem", stem)
    y = conv_bn(conv_bn(x, "a1", inner), "a2", stem, relu=False)
    x = layers.ReLU()(x + y)
    y = conv_bn(x, "b1", stage2, strides=2)
    y = conv_bn(y, "b2", stage2, relu=False)
    shortcut = conv_bn(x, "proj", stage2, strides=2, kernel=1, relu=False)
    x = layers.ReLU()(layers.Add()([y, shortcut]))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10)(x), name="mine")


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 8, 8, 3)).astype("uint8")
    return images, rng.integers(0, 10, n).astype("int32")



class GraphLatentPlanTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("resnet20", "resnet20"), ("resnet50", "resnet50"), ("vgg16", "vgg16")
    )
    def test_zoo_models_get_the_zoos_plan(self, name):
        # The same sharing as the slot-named plan, keys renamed.
        model = models.build_model(name, preset="dhp", width_mult=1 / 16)
        ours = lwdna.graph_latent_plan(model)
        zoo = lwdna.latent_plan(name, preset="dhp")
        rename = {}
        self.assertEqual(list(ours.conv_latents), list(zoo.conv_latents))
        for conv, pair in zoo.conv_latents.items():
            for theirs, mine in zip(pair, ours.conv_latents[conv]):
                self.assertEqual(rename.setdefault(theirs, mine), mine)
        self.assertLen(set(rename.values()), len(rename))
        self.assertEqual(rename[lwdna.RGB], lwdna.RGB)
        self.assertEqual(
            {bn: rename[k] for bn, k in zoo.bn_latents.items()},
            ours.bn_latents,
        )
        self.assertEqual(ours.classifier, zoo.classifier)
        self.assertEqual(
            ours.classifier_latent, rename[zoo.classifier_latent]
        )

    def test_user_model_shares_the_residual_stream(self):
        plan = lwdna.graph_latent_plan(_my_model())
        self.assertEqual(
            plan.conv_latents,
            {
                "stem": ("rgb", "stem"),
                "a1": ("stem", "a1"),
                "a2": ("a1", "stem"),
                "b1": ("stem", "b1"),
                "b2": ("b1", "b2"),
                "proj": ("stem", "b2"),
            },
        )
        self.assertEqual(plan.classifier_latent, "b2")
        self.assertEqual(plan.bn_latents["proj_bn"], "b2")
        self.assertLen(plan.bn_latents, 6)

    def test_unsupported_models_name_the_layer(self):
        inputs = keras.Input((8, 8, 3))
        x = keras.layers.Conv2D(4, 3, name="a")(inputs)
        y = keras.layers.Conv2D(4, 3, name="b")(inputs)
        x = keras.layers.Concatenate()([x, y])
        x = keras.layers.Conv2D(4, 3, name="c")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs, keras.layers.Dense(3)(x), name="cat")
        with self.assertRaisesRegex(
            lwdna.LWDNAError, "^model 'cat': layer 'c' reads channels"
        ):
            lwdna.graph_latent_plan(model)
        inputs = keras.Input((8, 8, 3))
        x = keras.layers.Conv2D(4, 3, name="a")(inputs)
        x = keras.layers.Flatten()(x)
        flat = keras.Model(inputs, keras.layers.Dense(3)(x), name="flat")
        with self.assertRaisesRegex(
            lwdna.LWDNAError, "^model 'flat': LW-DNA expects one classifier"
        ):
            lwdna.graph_latent_plan(flat)


class DeriveWidthsTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = _my_model()
        cls.result = lwdna.derive_widths(
            cls.model, _data(), batch_size=16, embedding_dim=2
        )

    def test_flops_meet_the_original_budget(self):
        r = self.result
        original = complexity.count(self.model, "dhp").flops
        self.assertEqual(r.flops["original"], original)
        self.assertAllClose(r.ratio, original / r.flops["widened"])
        # The binary search's own tolerance (0.001 of the widened FLOPs).
        self.assertTrue(r.threshold.converged)
        self.assertLessEqual(abs(r.threshold.ratio - r.ratio), 1e-3)
        self.assertAllClose(
            r.flops["derived"] / r.flops["widened"], r.threshold.ratio
        )
        self.assertEqual(r.search.steps, 2)

    def test_an_unconverged_search_is_reported(self):
        # The reference's pt search (start 5e-3, step 0.01, halved at each
        # crossing) cannot always land within 0.001: with seed 1 the
        # scores of this small net jump over the target; it stops after
        # 100 iterations and says so. The counted FLOPs are still the
        # table's at the threshold it ended on.
        r = lwdna.derive_widths(
            self.model, _data(), batch_size=16, embedding_dim=2, seed=1
        )
        self.assertFalse(r.threshold.converged)
        self.assertEqual(r.threshold.iterations, 100)
        self.assertGreater(abs(r.threshold.ratio - r.ratio), 1e-3)
        self.assertAllClose(
            r.flops["derived"] / r.flops["widened"], r.threshold.ratio
        )

    def test_widened_then_derived_widths(self):
        r = self.result
        for conv, f in r.widened_filters.items():
            self.assertEqual(f, 2 * self.model.get_layer(conv).filters)
            self.assertEqual(r.hypernet.model.get_layer(conv).filters, f)
            self.assertIsInstance(
                r.hypernet.model.get_layer(conv), HyperConv2D
            )
        # The residual stream's convs share one latent, hence one width.
        self.assertEqual(r.filters["stem"], r.filters["a2"])
        self.assertEqual(r.filters["b2"], r.filters["proj"])
        for conv, f in r.filters.items():
            self.assertEqual(r.model.get_layer(conv).filters, f)
        self.assertEqual(r.widths["rgb"], 3)
        # Floors: >= 40% of each widened group, >= 45% before the FC.
        self.assertGreaterEqual(r.widths["a1"], int(0.4 * 32))
        self.assertGreaterEqual(r.widths["b2"], int(0.45 * 64))
        self.assertFalse(
            any(isinstance(layer, HyperConv2D) for layer in r.model.layers)
        )
        # Rebuilding from `filters` gives the same architecture.
        again = surgery.rebuild(self.model, filters=r.filters)
        self.assertEqual(
            [w.shape for w in again.weights], [w.shape for w in r.model.weights]
        )

    def test_derived_equals_the_zeroed_widened_network(self):
        # METHODS §4.6 check 5, inference mode.
        r = self.result
        test_case.randomize_bn(r.hypernet.model, seed=4)
        weights = lwdna.derive_weights(r.hypernet, r.masks)
        derived = surgery.rebuild(self.model, filters=r.filters)
        lwdna.assign_weights(derived, weights)
        x = np.random.default_rng(6).uniform(0, 255, (3, 8, 8, 3))
        x = x.astype("float32")
        unpruned = r.hypernet.model(x, training=False).numpy()
        lwdna.zero_pruned_channels(r.hypernet, r.masks)
        expected = r.hypernet.model(x, training=False).numpy()
        self.assertAllClose(derived(x, training=False), expected, atol=1e-5)
        self.assertGreater(np.abs(unpruned - expected).max(), 1e-3)

    def test_the_model_passed_in_is_not_changed(self):
        self.assertEqual(self.model.get_layer("stem").filters, 16)
        self.assertFalse(
            any(isinstance(layer, HyperConv2D) for layer in self.model.layers)
        )

    def test_seeded(self):
        again = lwdna.derive_widths(
            self.model, _data(), batch_size=16, embedding_dim=2
        )
        self.assertEqual(again.filters, self.result.filters)
        for key, mask in again.masks.items():
            self.assertAllEqual(mask, self.result.masks[key])

    def test_dataset_input_and_budget(self):
        images, labels = _data()
        ds = tf.data.Dataset.from_tensor_slices(
            (images.astype("float32"), labels)
        ).batch(16)
        budget = self.result.flops["original"] // 2
        r = lwdna.derive_widths(
            self.model, ds, flops_budget=budget, embedding_dim=2
        )
        self.assertAllClose(r.ratio, budget / r.flops["widened"])
        self.assertLess(r.flops["derived"], self.result.flops["derived"])


class ErrorsTest(tf.test.TestCase):
    def test_arguments_are_named(self):
        model = _my_model(widths=(4, 4, 8))
        data = _data(16)
        cases = [
            (dict(widen=0.5), r"^widen must be in \[1.0, 64.0\]"),
            (dict(remain_percentage=0), r"^remain_percentage must be in"),
            (dict(linear_percentage=2), r"^linear_percentage must be in"),
            (dict(steps=0), "^steps must be an int >= 1"),
            (dict(batch_size=32), "^batch_size must be <= the number"),
            (dict(importance="x"), "^importance must be one of"),
            (dict(classifier_input="x"), "^classifier_input must be one of"),
            (dict(flops_budget=-1), r"^flops_budget must be in \(0, "),
            (
                dict(data=(np.zeros((4, 9, 9, 3)), np.zeros(4, int))),
                r"^data images must be \[N, 8, 8, 3\]",
            ),
            (
                dict(data=(np.zeros((4, 8, 8, 3)), np.full(4, 10))),
                r"^data labels must lie in \[0, 10\)",
            ),
            (dict(data=np.zeros(3)), "^data must be"),
        ]
        for kwargs, message in cases:
            with self.subTest(message=message):
                kwargs.setdefault("batch_size", 4)
                args = (model, kwargs.pop("data", data))
                with self.assertRaisesRegex(lwdna.LWDNAError, message):
                    lwdna.derive_widths(*args, **kwargs)


if __name__ == "__main__":
    tf.test.main()
