"""Tests for tfgraft.grafting.GraftingModel: grafting under `model.fit`.

The reference is the custom trainer's path: `Trainer` + `loop.fit` +
the job's `GraftHook` around the same `Grafter`, on the same nets, data
streams, optimizers and schedules.
"""

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tfgraft.config import OptimConfig
from tfgraft.config import RunConfig
from tfgraft.grafting import GraftingModel
from tfgraft.grafting import difflr_scales
from tfgraft.grafting import grafter as grafter_lib
from tfgraft.grafting import job as graft_job
from tfgraft.grafting import per_net_dataset
from tfgraft.testing import devices
from tfgraft.training import loop
from tfgraft.training import optimizers
from tfgraft.training import schedules
from tfgraft.training import trainer as trainer_lib

BATCH = 8
STEPS_PER_EPOCH = 2
EPOCHS = 2
TOTAL_STEPS = EPOCHS * STEPS_PER_EPOCH
OPTIM = OptimConfig(learning_rate=0.1, schedule="cosine")


def _net(seed, width=4):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(5)(x))


def _nets(num_nets=2):
    return [_net(10 + i) for i in range(num_nets)]


def _stream(seed, n=32):
    """Net `seed`'s own training stream (own data and order)."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 1, (n, 8, 8, 3)).astype("float32")
    labels = rng.integers(0, 5, n).astype("int32")
    return (
        tf.data.Dataset.from_tensor_slices((images, labels))
        .batch(BATCH, drop_remainder=True)
        .repeat()
    )


def _eval_dataset():
    return _stream(99, n=16).take(2)


def _trainer_run(workdir, strategy, every_steps=0, num_nets=2):
    """Nets trained by the custom trainer's loop with the job's graft hook."""
    scales = difflr_scales(num_nets)
    with strategy.scope():
        nets = _nets(num_nets)
        opts = [
            optimizers.TorchSGD(
                schedules.make_schedule(
                    OPTIM, STEPS_PER_EPOCH, TOTAL_STEPS, scale=s
                ),
                momentum=OPTIM.momentum,
                weight_decay=OPTIM.weight_decay,
            )
            for s in scales
        ]
        trainer = trainer_lib.Trainer(
            nets, opts, strategy, global_batch_size=BATCH
        )
        grafter = grafter_lib.Grafter(nets)
    hook = graft_job.GraftHook(grafter, every_steps)

    def make_iterators(start_step):
        del start_step
        return [
            iter(strategy.experimental_distribute_dataset(_stream(i)))
            for i in range(num_nets)
        ]

    history = loop.fit(
        trainer,
        make_iterators=make_iterators,
        eval_dataset=_eval_dataset(),
        run=RunConfig(
            epochs=EPOCHS, steps_per_loop=STEPS_PER_EPOCH, progress=False
        ),
        steps_per_epoch=STEPS_PER_EPOCH,
        workdir=workdir,
        hooks=[hook],
    )
    return trainer, hook, history


def _fit_run(strategy, num_nets=2, **graft_every):
    """The same nets, streams and optimizer under one `model.fit`."""
    with strategy.scope():
        model = GraftingModel(_nets(num_nets), **graft_every)
        model.compile(
            optimizer=optimizers.TorchSGD(
                schedules.CosineToZero(OPTIM.learning_rate, TOTAL_STEPS),
                momentum=OPTIM.momentum,
                weight_decay=OPTIM.weight_decay,
            ),
            lr_scales=difflr_scales(num_nets),
            jit_compile=False,  # the trainer's default (jit off)
        )
    history = model.fit(
        per_net_dataset([_stream(i) for i in range(num_nets)]),
        epochs=EPOCHS,
        steps_per_epoch=STEPS_PER_EPOCH,
        validation_data=_eval_dataset(),
        verbose=0,
    )
    return model, history


def _values(variables):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in variables]


class FitEqualsTrainerTest(tf.test.TestCase, parameterized.TestCase):
    def assertSameState(self, model, trainer, atol):
        for i, (a, b) in enumerate(zip(model.nets, trainer.nets)):
            # Every weight, BN moving statistics included.
            for x, y in zip(_values(a.weights), _values(b.weights)):
                self.assertAllClose(x, y, atol=atol, rtol=0, msg=f"net {i}")
        for a, b in zip(model.optimizers, trainer.optimizers):
            self.assertEqual(
                int(keras.ops.convert_to_numpy(a.iterations)),
                int(keras.ops.convert_to_numpy(b.iterations)),
            )
            for x, y in zip(_values(a.variables), _values(b.variables)):
                self.assertAllClose(x, y, atol=atol, rtol=0)

    def test_epoch_grafting_equals_trainer_and_job_hook(self):
        strategy = tf.distribute.get_strategy()
        trainer, hook, history = _trainer_run(
            self.create_tempdir().full_path, strategy
        )
        model, fit_history = _fit_run(strategy)
        # Same data, inits, per-net LR schedules (difflr) and the job's
        # cadence (a graft after epoch 1, none after the last epoch): the
        # same ops in the same order give the same floats.
        self.assertSameState(model, trainer, atol=0)
        self.assertEqual(len(hook.seconds), 1)
        self.assertEqual(model.graft_callback.grafts, 1)
        self.assertAllClose(model.graft_callback.alphas, hook.alphas, atol=0)
        # No graft after the last epoch: two nets would be equal after one.
        diff = max(
            np.abs(x - y).max()
            for x, y in zip(_values(model.nets[0].weights), _values(
                model.nets[1].weights
            ))
        )
        self.assertGreater(diff, 1e-3)
        # Per-net logs equal the trainer's epoch logs; validation saw the
        # pre-graft weights, as the trainer's evaluation.
        logs = fit_history.history
        for epoch, h in enumerate(history):
            for i in range(2):
                self.assertAllClose(
                    logs[f"net_{i}_loss"][epoch],
                    h["train"][i]["loss"],
                    rtol=1e-6,
                )
                self.assertAllClose(
                    logs[f"net_{i}_accuracy"][epoch],
                    h["train"][i]["accuracy"],
                    atol=1e-7,
                )
                self.assertAllClose(
                    logs[f"val_net_{i}_accuracy"][epoch],
                    h["test"]["nets"][i]["top1"],
                    atol=1e-7,
                )
                self.assertAllClose(
                    logs[f"val_net_{i}_loss"][epoch],
                    h["test"]["nets"][i]["loss"],
                    rtol=1e-6,
                )
            self.assertAllClose(
                logs["val_ensemble_accuracy"][epoch],
                h["test"]["ensemble"]["top1"],
                atol=1e-7,
            )
            self.assertAllClose(
                logs["loss"][epoch],
                np.mean([logs[f"net_{i}_loss"][epoch] for i in range(2)]),
                rtol=1e-6,
            )
        self.assertEqual(logs["grafts"], [1, 1])
        self.assertAllClose(logs["net_0_graft_alpha"], [hook.alphas[0]] * 2)

    def test_every_k_steps_equals_trainer_step_hook(self):
        strategy = tf.distribute.get_strategy()
        trainer, hook, _ = _trainer_run(
            self.create_tempdir().full_path, strategy, every_steps=3
        )
        model, _ = _fit_run(strategy, every_epochs=None, every_steps=3)
        # Step 3 of 4 grafts (mid-epoch 2); epoch ends do not.
        self.assertEqual(len(hook.seconds), 1)
        self.assertEqual(model.graft_callback.grafts, 1)
        self.assertEqual(int(model.global_step.numpy()), TOTAL_STEPS)
        self.assertSameState(model, trainer, atol=0)

    def test_step_cadence_grafts_after_the_last_step(self):
        strategy = tf.distribute.get_strategy()
        model, _ = _fit_run(strategy, every_epochs=None, every_steps=2)
        # Steps 2 and 4: the last step grafts too (as the job's step hook),
        # and two nets are one after a graft.
        self.assertEqual(model.graft_callback.grafts, 2)
        a, b = model.nets
        for x, y in zip(_values(a.weights), _values(b.weights)):
            self.assertAllClose(x, y, atol=1e-6)

    def test_mirrored_equals_trainer_and_replicas_agree(self):
        strategy = devices.mirrored_strategy()
        trainer, _, _ = _trainer_run(self.create_tempdir().full_path, strategy)
        model, _ = _fit_run(strategy)
        for net in model.nets:
            for v in net.weights:
                copies = strategy.experimental_local_results(v.value)
                self.assertAllClose(copies[0], copies[1], atol=0, rtol=0)
        # The same replica steps and all-reduces as the trainer's.
        self.assertSameState(model, trainer, atol=0)


class GraftingModelTest(tf.test.TestCase):
    def test_three_nets_shared_batches_predict_and_nets(self):
        nets = _nets(3)
        model = GraftingModel(nets, from_logits=True)
        self.assertIs(model.nets[1], nets[1])
        model.compile(
            [keras.optimizers.SGD(0.05 * (i + 1)) for i in range(3)],
            metrics=[keras.metrics.SparseTopKCategoricalAccuracy(k=2)],
        )
        images = np.random.default_rng(0).uniform(size=(16, 8, 8, 3))
        labels = np.arange(16) % 5
        history = model.fit(
            images, labels, batch_size=8, epochs=3, verbose=0, shuffle=False
        )
        logs = history.history
        for key in (
            "loss",
            "net_2_loss",
            "net_2_accuracy",
            "net_2_sparse_top_k_categorical_accuracy",
        ):
            self.assertLen(logs[key], 3)
        self.assertEqual(model.graft_callback.grafts, 2)
        self.assertLen(logs["net_0_graft_alpha"], 3)
        # predict: the mean of the nets' softmax probabilities.
        x = images[:4].astype("float32")
        probs = np.mean(
            [tf.nn.softmax(net(x)).numpy() for net in model.nets], axis=0
        )
        self.assertAllClose(model.predict(x, verbose=0), probs, atol=1e-6)
        self.assertAllClose(np.sum(probs, -1), np.ones(4), atol=1e-6)

    def test_lr_scales_are_the_job_schedules(self):
        model = GraftingModel(_nets(2))
        base = schedules.CosineToZero(0.1, 100)
        model.compile(
            optimizers.TorchSGD(base, momentum=0.9), lr_scales=[0.5, 1.0]
        )
        for opt, s in zip(model.optimizers, [0.5, 1.0]):
            want = schedules.make_schedule(OPTIM, 10, 100, scale=s)
            for step in (0, 37, 100):
                opt.iterations.assign(step)
                # Bit for bit the job's `make_schedule(scale=...)`.
                self.assertEqual(float(opt.learning_rate), float(want(step)))
        # Another schedule is wrapped: the same rates up to rounding.
        keras_cos = keras.optimizers.schedules.CosineDecay(0.1, 100)
        model.compile(keras.optimizers.SGD(keras_cos), lr_scales=[0.25, 1.0])
        opt = model.optimizers[0]
        opt.iterations.assign(40)
        self.assertAllClose(
            float(opt.learning_rate), 0.25 * float(keras_cos(40)), rtol=1e-7
        )
        model.compile(keras.optimizers.SGD(0.2), lr_scales=[0.5, 1.0])
        self.assertAllClose(
            [float(o.learning_rate) for o in model.optimizers], [0.1, 0.2]
        )
        self.assertIsNot(model.optimizers[0], model.optimizers[1])


class ErrorsTest(tf.test.TestCase):
    def test_one_net(self):
        with self.assertRaisesRegex(ValueError, r"len\(nets\)=1"):
            GraftingModel(_nets(1))

    def test_other_architecture_names_first_mismatch(self):
        with self.assertRaisesRegex(
            ValueError, r"net 1 layer \d+ \('conv2d_\d+', Conv2D 3x3x3->8\)"
        ):
            GraftingModel([_net(1), _net(2, width=8)])

    def test_bad_every_arguments_are_named(self):
        nets = _nets(2)
        cases = (
            (dict(every_epochs=0), "every_epochs=0"),
            (dict(every_epochs=1.5), "every_epochs=1.5"),
            (dict(every_epochs=None, every_steps=-2), "every_steps=-2"),
            (dict(every_epochs=None, every_steps="3"), "every_steps='3'"),
            (dict(every_steps=5), "not both"),
        )
        for kwargs, message in cases:
            with self.assertRaisesRegex(ValueError, message):
                GraftingModel(nets, **kwargs)

    def test_steps_per_execution_must_divide_every_steps(self):
        model = GraftingModel(_nets(2), every_epochs=None, every_steps=3)
        model.compile(keras.optimizers.SGD(0.1), steps_per_execution=2)
        with self.assertRaisesRegex(ValueError, "every_steps=3 must be"):
            model.fit(_stream(0), steps_per_epoch=2, verbose=0)

    def test_compile_and_data_errors(self):
        model = GraftingModel(_nets(2))
        with self.assertRaisesRegex(ValueError, "compile"):
            model.fit(_stream(0), steps_per_epoch=1, verbose=0)
        with self.assertRaisesRegex(ValueError, r"len\(optimizer\)=3"):
            model.compile([keras.optimizers.SGD() for _ in range(3)])
        sgd = keras.optimizers.SGD()
        with self.assertRaisesRegex(ValueError, "more than once"):
            model.compile([sgd, sgd])
        with self.assertRaisesRegex(ValueError, "lr_scales"):
            model.compile(sgd, lr_scales=[1.0])
        with self.assertRaisesRegex(ValueError, "metrics"):
            model.compile(sgd, metrics=["accuracy"])
        model.compile(sgd)
        streams = per_net_dataset([_stream(0), _stream(1), _stream(2)])
        with self.assertRaisesRegex(ValueError, "net_2"):
            model.fit(streams, steps_per_epoch=1, verbose=0)
        with self.assertRaisesRegex(ValueError, r"len\(datasets\)=1"):
            per_net_dataset([_stream(0)])


if __name__ == "__main__":
    tf.test.main()
