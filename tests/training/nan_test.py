"""Numerical faults: NaN/Inf losses stop the job or skip the batch."""

import json
import os

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tfgraft import config as cfg
from tfgraft.testing import devices
from tfgraft.training import loop
from tfgraft.training import optimizers
from tfgraft.training import trainer as trainer_lib
from train import flags as flags_lib

BATCH = 8


def _tiny_net(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


def _batches(steps, nan_at=(), nan_rows=BATCH):
    """`steps` batches; those in `nan_at` (0-based) get NaN images."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (steps, BATCH, 6, 6, 3)).astype("float32")
    labels = rng.integers(0, 3, (steps, BATCH)).astype("int32")
    for k in nan_at:
        images[k, :nan_rows] = np.nan
    return images, labels


def _trainer(strategy, on_nan, num_nets=2):
    with strategy.scope():
        nets = [_tiny_net(i) for i in range(num_nets)]
        opts = [
            optimizers.TorchSGD(0.1, momentum=0.9, weight_decay=5e-4)
            for _ in range(num_nets)
        ]
        return trainer_lib.Trainer(
            nets, opts, strategy, global_batch_size=BATCH, on_nan=on_nan
        )


def _iterator(strategy, images, labels, start=0):
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).unbatch()
    ds = ds.batch(BATCH).skip(start).repeat()
    return iter(strategy.experimental_distribute_dataset(ds))


class TrainerNanTest(tf.test.TestCase, parameterized.TestCase):
    def test_stop_mode_reports_first_bad_step_per_net(self):
        strategy = tf.distribute.get_strategy()
        trainer = _trainer(strategy, "stop")
        good = _batches(3)
        bad = _batches(3, nan_at=(1,))
        stats = trainer.train_loop(
            [_iterator(strategy, *good), _iterator(strategy, *bad)], 3
        )
        self.assertEqual(stats[0]["nonfinite_steps"], 0)
        self.assertNotIn("first_nonfinite", stats[0])
        self.assertTrue(np.isfinite(stats[0]["loss"]))
        self.assertGreaterEqual(stats[1]["nonfinite_steps"], 1)
        first = stats[1]["first_nonfinite"]
        self.assertEqual(first["step"], 2)
        self.assertAllClose(first["lr"], 0.1)
        self.assertTrue(np.isnan(first["loss"]))

    def test_skip_batch_equals_training_without_the_batch(self):
        # Two replicas, NaN images on replica 0 only: both replicas must
        # agree to skip, and the result must equal never seeing the batch
        # (weights, BN statistics and momentum), with iterations advanced.
        strategy = devices.mirrored_strategy()
        skipper = _trainer(strategy, "skip_batch", num_nets=1)
        images, labels = _batches(3, nan_at=(1,), nan_rows=BATCH // 2)
        stats = skipper.train_loop([_iterator(strategy, images, labels)], 3)
        self.assertEqual(stats[0]["nonfinite_steps"], 1)
        self.assertEqual(stats[0]["first_nonfinite"]["step"], 2)
        self.assertTrue(np.isfinite(stats[0]["loss"]))

        reference = _trainer(strategy, "stop", num_nets=1)
        keep = [0, 2]
        ref_stats = reference.train_loop(
            [_iterator(strategy, images[keep], labels[keep])], 2
        )
        self.assertEqual(ref_stats[0]["nonfinite_steps"], 0)
        self.assertAllClose(stats[0]["loss"], ref_stats[0]["loss"], atol=1e-6)
        self.assertEqual(int(skipper.optimizers[0].iterations.numpy()), 3)
        self.assertEqual(int(reference.optimizers[0].iterations.numpy()), 2)
        for a, b in zip(skipper.nets[0].weights, reference.nets[0].weights):
            self.assertTrue(np.all(np.isfinite(a.numpy())), a.path)
            self.assertAllClose(a, b, atol=1e-6, msg=a.path)
        opt_a = [
            v
            for v in skipper.optimizers[0].variables
            if v is not skipper.optimizers[0].iterations
        ]
        opt_b = [
            v
            for v in reference.optimizers[0].variables
            if v is not reference.optimizers[0].iterations
        ]
        for a, b in zip(opt_a, opt_b):
            self.assertAllClose(a, b, atol=1e-6, msg=a.path)

    def test_bad_on_nan_values_are_rejected(self):
        with self.assertRaisesRegex(cfg.ConfigError, "--on_nan=ignore"):
            cfg.RunConfig(on_nan="ignore")
        with self.assertRaisesRegex(ValueError, "on_nan=ignore"):
            _trainer(tf.distribute.get_strategy(), "ignore", num_nets=1)
        self.assertIn(loop.NonFiniteError, flags_lib.user_errors())


def _fit(trainer, images, labels, workdir, epochs=2):
    strategy = trainer.strategy
    steps_per_epoch = 2

    def make_iterators(start_step):
        return [
            _iterator(strategy, images, labels, start_step)
            for _ in range(trainer.num_nets)
        ]

    eval_ds = tf.data.Dataset.from_tensor_slices((images[0], labels[0])).batch(
        BATCH
    )
    return loop.fit(
        trainer,
        make_iterators=make_iterators,
        eval_dataset=eval_ds,
        run=cfg.RunConfig(epochs=epochs, steps_per_loop=1, progress=False),
        steps_per_epoch=steps_per_epoch,
        workdir=workdir,
    )


class FitNanTest(tf.test.TestCase):
    def test_stop_raises_one_line_and_keeps_last_good_checkpoint(self):
        workdir = self.create_tempdir().full_path
        trainer = _trainer(tf.distribute.get_strategy(), "stop", num_nets=2)
        images, labels = _batches(4, nan_at=(2,))
        with self.assertRaises(loop.NonFiniteError) as caught:
            _fit(trainer, images, labels, workdir)
        message = str(caught.exception)
        good = os.path.join(workdir, "checkpoints", "ckpt-2")
        self.assertEqual(
            message,
            f"net 0 step 3 lr 0.1: loss is nan; last good checkpoint: {good}",
        )
        self.assertEqual(
            tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")),
            good,
        )
        with open(os.path.join(workdir, "history.json")) as f:
            self.assertLen(json.load(f), 1)

    def test_skip_batch_counts_skipped_batches_in_history(self):
        workdir = self.create_tempdir().full_path
        trainer = _trainer(
            tf.distribute.get_strategy(), "skip_batch", num_nets=1
        )
        images, labels = _batches(4, nan_at=(2,))
        history = _fit(trainer, images, labels, workdir)
        self.assertEqual(
            [h["train"][0]["skipped_batches"] for h in history], [0, 1]
        )
        self.assertTrue(np.isfinite(history[-1]["train"][0]["loss"]))
        self.assertTrue(np.isfinite(history[-1]["test"]["nets"][0]["loss"]))
        self.assertEqual(int(trainer.global_step.numpy()), 4)


if __name__ == "__main__":
    tf.test.main()
