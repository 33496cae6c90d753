"""Tests for tfgraft.training.trainer on tiny models and real strategies."""

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tfgraft.testing import devices
from tfgraft.training import optimizers
from tfgraft.training import trainer as trainer_lib


def _tiny_net(seed, bn=True):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=not bn)(inputs)
    if bn:
        x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(5)(x)
    return keras.Model(inputs, outputs)


def _data(seed, n=16):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 1, (n, 8, 8, 3)).astype("float32")
    labels = rng.integers(0, 5, n).astype("int32")
    return images, labels


def _dataset(seed, batch, n=16):
    images, labels = _data(seed, n)
    return (
        tf.data.Dataset.from_tensor_slices((images, labels))
        .batch(batch, drop_remainder=True)
        .repeat()
    )


def _make(strategy, num_nets=2, batch=8, jit=False, accum=1, bn=True):
    with strategy.scope():
        nets = [_tiny_net(10 + i, bn=bn) for i in range(num_nets)]
        opts = [
            optimizers.TorchSGD(0.1, momentum=0.9, weight_decay=5e-4)
            for _ in range(num_nets)
        ]
        trainer = trainer_lib.Trainer(
            nets,
            opts,
            strategy,
            global_batch_size=batch,
            jit=jit,
            accum_steps=accum,
        )
    iterators = [
        iter(strategy.experimental_distribute_dataset(_dataset(i, batch)))
        for i in range(num_nets)
    ]
    return trainer, iterators


def _mirrored():
    return devices.mirrored_strategy()


class TrainerTest(tf.test.TestCase, parameterized.TestCase):
    def test_mirrored_copies_stay_identical(self):
        strategy = _mirrored()
        trainer, iterators = _make(strategy)
        stats = trainer.train_loop(iterators, 3)
        self.assertLen(stats, 2)
        self.assertEqual(int(trainer.global_step.numpy()), 3)
        for net in trainer.nets:
            for v in net.weights:
                copies = strategy.experimental_local_results(v.value)
                self.assertAllClose(copies[0], copies[1], atol=0, rtol=0)

    def test_mirrored_loss_equals_single_device(self):
        mirrored, it_m = _make(_mirrored(), num_nets=1, bn=False)
        single, it_s = _make(
            tf.distribute.OneDeviceStrategy("/cpu:0"), num_nets=1, bn=False
        )
        for _ in range(3):
            sm = mirrored.train_loop(it_m, 1)[0]["loss"]
            ss = single.train_loop(it_s, 1)[0]["loss"]
            self.assertAllClose(sm, ss, rtol=1e-5)
        for a, b in zip(mirrored.nets[0].weights, single.nets[0].weights):
            self.assertAllClose(a.numpy(), b.numpy(), atol=1e-5)

    @parameterized.named_parameters(
        ("default", False), ("mirrored_logical_cpus", True)
    )
    def test_progress_sums_equal_the_loop_statistics(self, mirrored):
        strategy = _mirrored() if mirrored else tf.distribute.get_strategy()
        trainer, iterators = _make(strategy)
        trainer.train_loop(iterators, 2)
        trainer.reset_progress()
        self.assertAllEqual(trainer.read_progress(), np.zeros([2, 4]))
        first = trainer.train_loop(iterators, 3)
        second = trainer.train_loop(iterators, 2)
        sums = trainer.read_progress()
        for i in range(2):
            loss = 3 * first[i]["loss"] + 2 * second[i]["loss"]
            self.assertAllClose(sums[i, 0], loss, rtol=1e-5)
            # 8 examples per step; accuracy is correct / examples.
            self.assertEqual(sums[i, 2], 5 * 8)
            self.assertEqual(sums[i, 3], 5)
            correct = 24 * first[i]["accuracy"] + 16 * second[i]["accuracy"]
            self.assertAllClose(sums[i, 1], correct, atol=1e-4)

    def test_nets_train_independently(self):
        trainer, iterators = _make(tf.distribute.get_strategy())
        before = [w.numpy().copy() for w in trainer.nets[1].weights]
        loss0 = trainer.train_loop(iterators, 1)
        after = [w.numpy() for w in trainer.nets[1].weights]
        self.assertTrue(
            any(np.abs(a - b).max() > 0 for a, b in zip(after, before))
        )
        self.assertNotAlmostEqual(loss0[0]["loss"], loss0[1]["loss"], places=4)

    def test_accumulation_equals_large_batch(self):
        strategy = tf.distribute.get_strategy()
        full, it_f = _make(strategy, num_nets=1, batch=8, accum=1, bn=False)
        accum, it_a = _make(strategy, num_nets=1, batch=8, accum=4, bn=False)
        images, labels = next(iter(_dataset(0, 8)))
        g_full = full._grad_fns[0](images, labels)[2]
        g_acc = accum._grad_fns[0](images, labels)[2]
        for a, b in zip(g_full, g_acc):
            self.assertAllClose(a, b, atol=1e-6)
        full.train_loop(it_f, 2)
        accum.train_loop(it_a, 2)
        for a, b in zip(full.nets[0].weights, accum.nets[0].weights):
            self.assertAllClose(a.numpy(), b.numpy(), atol=1e-5)

    def test_jit_matches_no_jit_under_mirrored(self):
        plain, it_p = _make(_mirrored(), num_nets=1)
        jitted, it_j = _make(_mirrored(), num_nets=1, jit=True)
        lp = plain.train_loop(it_p, 2)[0]["loss"]
        lj = jitted.train_loop(it_j, 2)[0]["loss"]
        self.assertAllClose(lp, lj, rtol=1e-4)
        for a, b in zip(plain.nets[0].weights, jitted.nets[0].weights):
            self.assertAllClose(a.numpy(), b.numpy(), atol=1e-4)
        # Evaluation runs its forward pass under XLA too: same figures.
        images, labels = _data(5, n=10)
        ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
        ep, ej = plain.evaluate(ds), jitted.evaluate(ds)
        self.assertEqual(ej["images"], 10)
        self.assertAllClose(ep["nets"][0]["top1"], ej["nets"][0]["top1"])
        self.assertAllClose(
            ep["nets"][0]["loss"], ej["nets"][0]["loss"], rtol=1e-4
        )

    def test_evaluate_counts_and_ensemble(self):
        trainer, _ = _make(tf.distribute.get_strategy(), num_nets=2)
        images, labels = _data(5, n=10)
        ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
        result = trainer.evaluate(ds)
        self.assertEqual(result["images"], 10)
        for i, net in enumerate(trainer.nets):
            logits = net(images, training=False).numpy()
            top1 = np.mean(np.argmax(logits, -1) == labels)
            self.assertAllClose(result["nets"][i]["top1"], top1)
        probs = sum(
            tf.nn.softmax(n(images, training=False)).numpy()
            for n in trainer.nets
        )
        ens = np.mean(np.argmax(probs, -1) == labels)
        self.assertAllClose(result["ensemble"]["top1"], ens)

    def test_batch_not_divisible_is_rejected(self):
        with self.assertRaises(ValueError) as raised:
            _make(tf.distribute.get_strategy(), batch=6, accum=4)
        message = str(raised.exception)
        self.assertEqual(
            message,
            "global_batch_size=6 must be divisible by the replicas (1) x "
            "accum_steps=4",
        )


if __name__ == "__main__":
    tf.test.main()
