"""Tests for tfgraft.stripe.fit: stripe pruning with plain `model.fit`."""

import contextlib

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tfgraft import graph as graph_lib
from tfgraft.layers import StripeConv2D
from tfgraft.stripe import fit
from tfgraft.stripe import prune
from tfgraft.stripe import skeleton
from tfgraft.stripe import trainer as trainer_lib
from tfgraft.testing import devices
from tfgraft.training import optimizers

SR = 0.05
THRESHOLD = 0.1
BATCH = 8
STEPS = 4


def _net(conv=keras.layers.Conv2D, seed=3):
    """conv-BN-ReLU twice (stride 2, bias, "same"/"valid"), GAP, dense."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3), name="images")
    x = conv(6, 3, padding="same", use_bias=False, name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="b1")(x)
    x = keras.layers.ReLU(name="r1")(x)
    x = conv(8, 3, strides=2, padding="valid", name="c2")(x)
    x = keras.layers.BatchNormalization(name="b2")(x)
    x = keras.layers.ReLU(name="r2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="fc")(x), name="n")


def _data(n=BATCH * STEPS, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 1, (n, 8, 8, 3)).astype("float32")
    labels = (np.arange(n) % 3).astype("int32")
    return images, labels


def _dataset():
    return tf.data.Dataset.from_tensor_slices(_data()).batch(BATCH)


def _skeletons(seed=0):
    """Same random skeletons for both paths: dead stripes, a dead filter."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, filters in (("c1", 6), ("c2", 8)):
        fs = rng.uniform(0.05, 1.2, (3, 3, filters)) * rng.choice(
            [-1.0, 1.0], (3, 3, filters)
        )
        fs[:, :, 1] = rng.uniform(-THRESHOLD, THRESHOLD, (3, 3))
        out[name] = fs.astype("float32")
    return out


def _set_skeletons(model, skeletons):
    for name, fs in skeletons.items():
        model.get_layer(name).filter_skeleton.assign(fs)


def _optimizer(kind):
    if kind == "keras_sgd":
        return keras.optimizers.SGD(0.1, momentum=0.9)
    return optimizers.TorchSGD(0.1, momentum=0.9, weight_decay=5e-3)


def _fit(strategy, kind, jit_compile=False):
    """`prune_stripes` + `compile` + `fit` for one epoch of `_dataset`."""
    base = _net()
    with strategy.scope():
        model = fit.prune_stripes(base, sr=SR, threshold=THRESHOLD)
        _set_skeletons(model, _skeletons())
        model.compile(
            optimizer=_optimizer(kind),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit_compile,
        )
    model.fit(_dataset(), epochs=1, shuffle=False, verbose=0)
    return model


def _train(strategy, kind, weights, jit=False):
    """The job's path: a StripeConv2D net under `StripeTrainer`."""
    with strategy.scope():
        net = _net(StripeConv2D)
        net.set_weights(weights)
        trainer = trainer_lib.StripeTrainer(
            [net],
            [_optimizer(kind)],
            strategy,
            sr=SR,
            threshold=THRESHOLD,
            global_batch_size=BATCH,
            jit=jit,
        )
    it = iter(strategy.experimental_distribute_dataset(_dataset()))
    trainer.train_loop([it], STEPS)
    return net


def _start_weights():
    """The wrapped net's weights before training (skeletons set)."""
    model = fit.prune_stripes(_net(), sr=SR, threshold=THRESHOLD)
    _set_skeletons(model, _skeletons())
    return model.get_weights()


@contextlib.contextmanager
def _graph_rewrites_for(kind):
    """Grappler's arithmetic rewrites off for Keras' SGD, restored after.

    Keras' SGD computes `m * momentum - g * lr`. For a stripe conv's kernel
    `g` is `dW * FS` (the skeleton broadcast), and Grappler's arithmetic
    optimizer reassociates `(dW * FS) * lr` into `dW * (FS * lr)` when `g`
    has no other reader -- as in `fit`'s graph, but not in
    `StripeTrainer`'s, whose non-finite check also reads every gradient.
    That rewrite (not the skeleton update) made the kernels differ by one
    float32 ulp; with it off both paths agree bit for bit. `TorchSGD`
    (`m = mu * m + g`) offers no such chain and runs with every rewrite.
    """
    if kind != "keras_sgd":
        yield
        return
    saved = tf.config.optimizer.get_experimental_options()
    tf.config.optimizer.set_experimental_options(
        {"arithmetic_optimization": False}
    )
    try:
        yield
    finally:
        restore = saved.get("arithmetic_optimization", True)
        tf.config.optimizer.set_experimental_options(
            {"arithmetic_optimization": restore}
        )


def _named(model, trainable_only=False):
    variables = model.trainable_weights if trainable_only else model.weights
    return {v.path: v.numpy() for v in variables}


class PruneStripesTest(tf.test.TestCase, parameterized.TestCase):
    def test_same_function_names_and_weights(self):
        base = _net()
        x = _data(4)[0]
        # Random BN statistics, so inference mode is not the identity.
        rng = np.random.default_rng(1)
        for name in ("b1", "b2"):
            bn = base.get_layer(name)
            for v in (bn.gamma, bn.beta, bn.moving_mean):
                v.assign(rng.normal(0.5, 0.3, v.shape).astype("f4"))
        model = fit.prune_stripes(base, sr=1e-4, threshold=0.01)
        self.assertIsInstance(model, fit.StripeModel)
        self.assertEqual(model.name, base.name)
        self.assertEqual(
            [layer.name for layer in model.layers],
            [layer.name for layer in base.layers],
        )
        for name in ("c1", "c2"):
            layer = model.get_layer(name)
            self.assertIsInstance(layer, StripeConv2D)
            self.assertAllEqual(
                layer.filter_skeleton.numpy(),
                np.ones(layer.filter_skeleton.shape),
            )
            self.assertAllEqual(layer.kernel, base.get_layer(name).kernel)
        for training in (False, True):
            self.assertAllClose(
                model(x, training=training),
                base(x, training=training),
                rtol=0,
                atol=1e-6,
            )
        # The user's model is not touched.
        self.assertIsInstance(base.get_layer("c1"), keras.layers.Conv2D)
        self.assertNotIsInstance(base.get_layer("c1"), StripeConv2D)

    def test_sequential(self):
        keras.utils.set_random_seed(0)
        base = keras.Sequential(
            [
                keras.Input((8, 8, 3)),
                keras.layers.Conv2D(4, 3, name="conv"),
                keras.layers.Flatten(),
                keras.layers.Dense(2, name="fc"),
            ],
            name="seq",
        )
        model = fit.prune_stripes(base, sr=1e-4, threshold=0.01)
        self.assertIsInstance(model.get_layer("conv"), StripeConv2D)
        x = _data(2)[0]
        self.assertAllClose(model(x), base(x), rtol=0, atol=1e-6)

    def test_exclude_keeps_a_plain_conv(self):
        inputs = keras.Input((8, 8, 3))
        x = keras.layers.Conv2D(4, 3, name="c1")(inputs)
        x = keras.layers.Conv2D(4, 3, dilation_rate=2, name="dilated")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        base = keras.Model(inputs, keras.layers.Dense(2)(x))
        model = fit.prune_stripes(
            base, sr=1e-4, threshold=0.01, exclude=["dilated"]
        )
        self.assertIsInstance(model.get_layer("c1"), StripeConv2D)
        self.assertNotIsInstance(model.get_layer("dilated"), StripeConv2D)
        x = _data(2)[0]
        self.assertAllClose(model(x), base(x), rtol=0, atol=1e-6)

    def test_keras_round_trip_keeps_training_state(self):
        model = _fit(tf.distribute.get_strategy(), "torch_sgd")
        path = self.create_tempfile("m.keras").full_path
        model.save(path)
        loaded = keras.models.load_model(path)
        self.assertIsInstance(loaded, fit.StripeModel)
        self.assertEqual((loaded.sr, loaded.threshold), (SR, THRESHOLD))
        self.assertIsInstance(loaded.optimizer, fit.SkeletonOptimizer)
        self.assertEqual(int(loaded.optimizer.iterations), STEPS)
        # One more epoch from the saved state equals one more in memory.
        for m in (model, loaded):
            m.fit(_dataset(), epochs=1, shuffle=False, verbose=0)
        want, got = _named(model), _named(loaded)
        self.assertEqual(list(want), list(got))
        for path in want:
            self.assertAllEqual(got[path], want[path], msg=path)


class FitEqualsTrainerTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("keras_sgd", "keras_sgd"), ("torch_sgd_weight_decay", "torch_sgd")
    )
    def test_fit_equals_stripe_trainer(self, kind):
        strategy = tf.distribute.get_strategy()
        with _graph_rewrites_for(kind):
            model = _fit(strategy, kind)
            net = _train(strategy, kind, _start_weights())
        got, want = _named(model), _named(net)
        self.assertEqual(list(got), list(want))
        for path in want:
            self.assertAllEqual(got[path], want[path], msg=path)
        # The update ran: dead stripes stay 0 and dead filters lost BN.
        c1 = model.get_layer("c1").filter_skeleton.numpy()
        dead = np.abs(_skeletons()["c1"]) <= THRESHOLD
        self.assertAllEqual(c1[dead], np.zeros(dead.sum()))
        self.assertAllEqual(model.get_layer("b1").gamma.numpy()[1], 0.0)
        self.assertEqual(int(model.optimizer.iterations), STEPS)

        # Compaction: the same model as the job's path.
        result = fit.strip_stripes(model)
        masked = prune.hard_mask(net, THRESHOLD)
        job = prune.compact(masked, THRESHOLD)
        self.assertEqual(result.threshold, THRESHOLD)
        for convention in fit.CONVENTIONS:
            self.assertEqual(
                result.complexity[convention],
                prune.reduction(
                    prune.cost(net, convention),
                    prune.cost(job.model, convention),
                ),
            )
        pff = result.complexity["pff"]
        self.assertLess(pff["after"]["flops"], pff["before"]["flops"])
        self.assertEqual(result.layers, job.layers)
        self.assertEqual(
            [type(x).__name__ for x in result.model.layers],
            [type(x).__name__ for x in job.model.layers],
        )
        x = _data(8, seed=5)[0]
        self.assertAllEqual(result.model(x), job.model(x))
        self.assertAllClose(result.model(x), masked(x), rtol=0, atol=1e-5)

    def test_mirrored_fit_equals_stripe_trainer(self):
        strategy = devices.mirrored_strategy()
        model = _fit(strategy, "torch_sgd")
        net = _train(strategy, "torch_sgd", _start_weights())
        # Trainable weights (skeletons, kernels, BN gamma/beta) match. BN
        # moving statistics do not: `StripeTrainer` averages them over the
        # replicas, Keras' `fit` keeps each replica's own.
        got = _named(model, trainable_only=True)
        want = _named(net, trainable_only=True)
        for path in want:
            self.assertAllEqual(got[path], want[path], msg=path)
        # The replicas stay identical.
        for v in model.weights:
            copies = strategy.experimental_local_results(v.value)
            self.assertLen(copies, 2)
            if v.trainable:
                self.assertAllEqual(copies[0], copies[1], msg=v.path)

    def test_jit_compile(self):
        # `fit` compiles its whole step (update and optimizer included) with
        # XLA, `StripeTrainer` only the forward/backward: the fusions
        # differ, so values agree to XLA's rounding (the trainer's own
        # jit and non-jit runs differ by as much, ~1e-7 here), while the
        # masks, decided on values far from the threshold, agree exactly.
        strategy = tf.distribute.get_strategy()
        model = _fit(strategy, "torch_sgd", jit_compile=True)
        self.assertTrue(model.jit_compile)
        net = _train(strategy, "torch_sgd", _start_weights(), jit=True)
        got, want = _named(model), _named(net)
        for path in want:
            self.assertAllClose(
                got[path], want[path], rtol=1e-6, atol=1e-6, msg=path
            )
            if "filter_skeleton" in path:
                self.assertAllEqual(got[path] == 0, want[path] == 0)


class BadInputTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("negative_sr", {"sr": -1.0}, "sr must be .*Received: sr=-1.0"),
        ("nan_threshold", {"threshold": float("nan")}, "threshold=nan"),
        ("string_sr", {"sr": "big"}, "Received: sr=big"),
    )
    def test_bad_strengths(self, kwargs, message):
        args = {"sr": 1e-4, "threshold": 0.01, **kwargs}
        with self.assertRaisesRegex(ValueError, message):
            fit.prune_stripes(_net(), **args)

    def test_subclassed_model(self):
        class Net(keras.Model):
            def __init__(self):
                super().__init__()
                self.conv = keras.layers.Conv2D(4, 3)

            def call(self, x):
                return self.conv(x)

        net = Net()
        net(np.zeros((1, 8, 8, 3), "f4"))
        with self.assertRaisesRegex(
            graph_lib.GraphError, "keras.Model\\(inputs, outputs\\)"
        ):
            fit.prune_stripes(net, sr=1e-4, threshold=0.01)

    def test_no_conv(self):
        inputs = keras.Input((4,))
        net = keras.Model(inputs, keras.layers.Dense(2)(inputs))
        with self.assertRaisesRegex(
            skeleton.StripePruningError, "no keras.layers.Conv2D"
        ):
            fit.prune_stripes(net, sr=1e-4, threshold=0.01)

    def test_unsupported_conv_is_named(self):
        inputs = keras.Input((8, 8, 4))
        x = keras.layers.Conv2D(4, 3, groups=2, name="grouped")(inputs)
        net = keras.Model(inputs, x)
        with self.assertRaisesRegex(
            ValueError, "'grouped' \\(Conv2D, groups=2\\).*exclude="
        ):
            fit.prune_stripes(net, sr=1e-4, threshold=0.01)
        with self.assertRaisesRegex(ValueError, "exclude names layer 'c9'"):
            fit.prune_stripes(net, sr=1e-4, threshold=0.01, exclude=["c9"])

    def test_strip_arguments(self):
        model = fit.prune_stripes(_net(), sr=1e-4, threshold=0.01)
        with self.assertRaisesRegex(ValueError, "target_flops_cut=1.5"):
            fit.strip_stripes(model, target_flops_cut=1.5)
        with self.assertRaisesRegex(ValueError, "threshold=-1"):
            fit.strip_stripes(model, threshold=-1)
        plain = _net(StripeConv2D)
        with self.assertRaisesRegex(ValueError, "pass threshold="):
            fit.strip_stripes(plain)


if __name__ == "__main__":
    tf.test.main()
