"""Tests for tfgraft.ekg: gating, extraction, distillation, data, loading.

METHODS.md §3.8 checks 3 (compact == masked), 4 (ResNet-56 counts) and 7
(knowledge loss); the search and the memory bank (checks 5, 6) are in
tests/ekg/search_test.py, the end-to-end job in tests/ekg/job_test.py.
"""

import os

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tfgraft import complexity
from tfgraft import config as cfg
from tfgraft import data as data_lib
from tfgraft import models
from tfgraft import pretrained
from tfgraft.data import sources as data_sources
from tfgraft.ekg import data as ekg_data
from tfgraft.ekg import distill
from tfgraft.ekg import extract
from tfgraft.ekg import gated as gated_lib
from tfgraft.ekg import search as search_lib
from tfgraft.ekg import trainer as ekg_trainer
from tfgraft.layers import gate as gate_lib
from tfgraft.testing import devices
from tfgraft.testing import test_case
from tfgraft.training import optimizers
from tfgraft.training import trainer as trainer_lib


def _mirrored():
    return devices.mirrored_strategy()


def _tiny_resnet(seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    model = models.build_model(
        "resnet20", preset="ekg", width_mult=0.25, **kwargs
    )
    # Non-trivial BN state, so masked channels would show in the logits.
    return test_case.randomize_bn(model, seed)


def _gated(model):
    slots = models.layer_slots("resnet20", preset="ekg")
    return gated_lib.GatedNetwork(model, slots=slots)


def _random_state(gated, seed):
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(i.channels).astype("float32") for i in gated.info]
    rates = [float(rng.uniform(0.05, 1.0)) for _ in gated.info]
    gated.set_state(orders, rates)
    return orders, rates


class GatedNetworkTest(tf.test.TestCase, parameterized.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = _tiny_resnet()
        cls.gated = _gated(cls.model)
        cls.x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3))

    def test_gate_placement_follows_the_reference(self):
        info = {i.slot: i for i in self.gated.info}
        self.assertLen(info, 12)  # 3 streams + 9 inner convs
        for s in (1, 2, 3):
            stream = info[f"stage{s}"]
            # Stem / projection + 3 blocks: the reference's num_call.
            self.assertEqual(stream.num_calls, 4)
            self.assertEqual(stream.channels, 4 * 2 ** (s - 1))
            gate = self.gated.gates[self.gated.gate_index(stream.name)]
            # Stage 1: stem + 3 block outputs; later stages: 3 outputs.
            self.assertLen(gate._inbound_nodes, 4 if s == 1 else 3)
        inner = info["stage2/block1/conv1"]
        self.assertEqual(inner.num_calls, 1)
        self.assertEqual(inner.producers, ("stage2_block1_conv1",))
        gate = self.gated.gates[self.gated.gate_index(inner.name)]
        self.assertLen(gate._inbound_nodes, 1)

    def test_full_masks_reproduce_the_source(self):
        self.gated.set_state(rates=[1.0] * self.gated.num_gates)
        for training in (False, True):
            self.assertAllClose(
                self.gated.model(self.x, training=training),
                self.model(self.x, training=training),
                atol=1e-5,
            )

    def test_search_bn_never_updates_statistics(self):
        before = [w.numpy() for w in self.gated.model.non_trainable_weights]
        self.gated.model(self.x, training=True)
        after = [w.numpy() for w in self.gated.model.non_trainable_weights]
        for a, b in zip(before, after):
            self.assertAllEqual(a, b)

    @parameterized.named_parameters(("a", 1), ("b", 2))
    def test_compact_equals_masked(self, seed):
        _random_state(self.gated, seed)
        compact, config = extract.extract(
            self.gated,
            models.default_channel_config("resnet20").scaled(0.25),
            num_classes=10,
            input_shape=(32, 32, 3),
            preset="ekg",
        )
        kept = self.gated.kept()
        for info, k in zip(self.gated.info, kept):
            self.assertEqual(config.widths[info.slot], k)
        self.assertEqual(
            compact.get_layer(self.gated.info[0].producers[0]).filters,
            kept[0],
        )
        for training in (False, True):
            masked = self.gated.model(self.x, training=training).numpy()
            self.assertAllClose(
                compact(self.x, training=training), masked, atol=1e-4
            )
        # Every masked conv kernel keeps the unmasked Frobenius norm.
        for layer in self.gated.layers.values():
            if isinstance(layer, gate_lib.GatedConv2D):
                self.assertAllClose(
                    np.linalg.norm(layer.masked_kernel()),
                    np.linalg.norm(layer.kernel.numpy()),
                    rtol=1e-5,
                )

    def test_flops_model_matches_the_counter(self):
        _random_state(self.gated, 3)
        kept = self.gated.kept()
        fm = search_lib.FlopsModel(self.gated)
        counted = complexity.count(
            self.model,
            "ekg",
            active_channels=search_lib.active_channels(self.gated, kept),
        )
        self.assertEqual(fm.flops(kept), counted.flops)
        self.assertEqual(
            fm.flops([i.channels for i in self.gated.info]), fm.full_flops
        )

    @parameterized.named_parameters(
        (
            "option_a",
            "resnet20",
            {"shortcut": "A"},
            r"^layer 'stage2_block0_shortcut' is an option-A shortcut; .* "
            r"\(shortcut='projection', the ekg preset's default\)$",
        ),
        ("depthwise", "mobilenetv2", {}, "not supported"),
    )
    def test_unsupported_models(self, name, kwargs, message):
        model = models.build_model(name, width_mult=0.125, **kwargs)
        with self.assertRaisesRegex(gated_lib.GatingError, message) as ctx:
            gated_lib.GatedNetwork(model)
        self.assertNotIn("--", str(ctx.exception))


class CountTest(tf.test.TestCase):
    def test_unpruned_ekg_resnet56(self):
        model = models.build_model("resnet56", preset="ekg")
        result = complexity.count(model, "ekg")
        self.assertEqual(result.flops, 126_837_376)
        self.assertEqual(result.params, 860_026)
        trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        self.assertEqual(trainable, 855_770)


def _np_kl(a, b, t):
    def log_softmax(z):
        z = z / t
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    la, lb = log_softmax(a), log_softmax(b)
    return t * (np.exp(la) * (la - lb)).sum(-1)


class DistillTest(tf.test.TestCase, parameterized.TestCase):
    def test_kl_t_matches_numpy(self):
        rng = np.random.default_rng(0)
        a, b = rng.normal(size=(2, 5, 7)) * 3
        self.assertAllClose(
            distill.kl_t(a, b, 4.0), _np_kl(a, b, 4.0), rtol=1e-5
        )
        self.assertAllClose(distill.kl_t(a, a, 4.0), np.zeros(5), atol=1e-6)

    def test_teachers_equal_to_student_reduce_to_ce(self):
        rng = np.random.default_rng(1)
        student = rng.normal(size=(6, 10)).astype("float32")
        views = np.stack([student, student])
        labels = rng.integers(0, 10, 6)
        knowledge = np.repeat(student[:, :, None], 5, axis=2)
        total, kl, selected = distill.knowledge_loss(
            views, labels, knowledge, 4.0
        )
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, student)
        self.assertAllClose(kl, 0.0, atol=1e-5)
        self.assertAllClose(total, 2 * tf.reduce_sum(ce), rtol=1e-5)
        self.assertAllEqual(selected, np.ones(5))

    @parameterized.named_parameters(("a", 2), ("b", 3), ("c", 4))
    def test_selection_and_loss_match_numpy_reference(self, seed):
        rng = np.random.default_rng(seed)
        b, c, t, temp = 8, 10, 5, 4.0
        knowledge = rng.normal(size=(b, c, t)) * 2
        # Teachers drift away from teacher 0 by growing amounts.
        for k in range(1, t):
            knowledge[:, :, k] = knowledge[:, :, 0] + rng.normal(
                size=(b, c)
            ) * (0.5 * k)
        views = knowledge[None, :, :, 0] + rng.normal(size=(2, b, c)) * 1.2
        labels = rng.integers(0, c, b)
        # numpy reference of METHODS §3.4.
        best = knowledge[:, :, 0]
        d_s = _np_kl(best, views.mean(0), temp).sum()
        d_t = np.array(
            [_np_kl(best, knowledge[:, :, k], temp).sum() for k in range(t)]
        )
        chosen = d_t <= d_s
        target = knowledge[:, :, chosen].mean(-1)
        ce = 0.0
        for v in range(2):
            z = views[v] - views[v].max(-1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
            ce += -logp[np.arange(b), labels].sum()
        kl = sum(_np_kl(target, views[v], temp).sum() for v in range(2))
        selected, got_ds, got_dt = distill.select_teachers(
            knowledge, views, temp
        )
        self.assertAllEqual(selected, chosen.astype("float32"))
        self.assertAllClose(got_ds, d_s, rtol=1e-5)
        self.assertAllClose(got_dt, d_t, rtol=1e-5, atol=1e-6)
        self.assertTrue(0 < chosen.sum() < t)  # a real curriculum cut
        total, got_kl, _ = distill.knowledge_loss(
            views, labels, knowledge, temp
        )
        self.assertAllClose(got_kl, kl, rtol=1e-5)
        self.assertAllClose(total, ce + kl, rtol=1e-5)

    def test_no_teacher_selected_gives_zero_target(self):
        knowledge = np.ones((2, 3, 4), np.float32)
        target = distill.knowledge_target(knowledge, tf.zeros([4]))
        self.assertAllEqual(target, np.zeros((2, 3)))


class KnowledgeTrainerTest(tf.test.TestCase):
    def _make(self, strategy, batch=8, **kwargs):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            inputs = keras.Input((8, 8, 3))
            x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
            x = keras.layers.BatchNormalization()(x)
            x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
            net = keras.Model(inputs, keras.layers.Dense(5)(x))
            opt = optimizers.TorchSGD(0.1, momentum=0.9, weight_decay=5e-4)
            trainer = ekg_trainer.KnowledgeTrainer(
                [net], [opt], strategy, global_batch_size=batch, **kwargs
            )
        rng = np.random.default_rng(0)
        images = rng.uniform(0, 1, (batch, 2, 8, 8, 3)).astype("float32")
        labels = rng.integers(0, 5, batch).astype("int32")
        knowledge = rng.normal(size=(batch, 5, 3)).astype("float32")
        ds = tf.data.Dataset.from_tensors(
            (images, (labels, knowledge))
        ).repeat()
        return trainer, ds, (images, labels, knowledge)

    def test_loss_is_the_mean_over_views_and_images(self):
        trainer, _, (images, labels, knowledge) = self._make(
            tf.distribute.get_strategy()
        )
        loss, correct, grads = trainer._grad_fns[0](
            tf.constant(images), (tf.constant(labels), tf.constant(knowledge))
        )
        net = trainer.nets[0]
        flat = np.concatenate([images[:, 0], images[:, 1]])
        views = tf.reshape(net(flat, training=True), [2, 8, 5])
        total, _, _ = distill.knowledge_loss(views, labels, knowledge, 4.0)
        self.assertAllClose(loss, total / 16.0, rtol=1e-5)
        self.assertLen(grads, len(net.trainable_variables))
        # count_correct: correct predictions averaged over the two views.
        pred = np.argmax(views.numpy(), axis=-1)
        want = (pred == labels[None]).sum() / 2.0
        self.assertAllClose(correct, want, atol=1e-6)

    def test_jit_and_accumulation(self):
        strategy = tf.distribute.get_strategy()
        trainer, _, (images, labels, knowledge) = self._make(
            strategy, jit=True, accum_steps=2
        )
        loss, correct, _ = trainer._grad_fns[0](
            tf.constant(images), (tf.constant(labels), tf.constant(knowledge))
        )
        # Two micro-batches of 4 images: the sum of their mean losses.
        net = trainer.nets[0]
        want = 0.0
        for half in (slice(0, 4), slice(4, 8)):
            x = images[half]
            flat = np.concatenate([x[:, 0], x[:, 1]])
            views = tf.reshape(net(flat, training=True), [2, 4, 5])
            total, _, _ = distill.knowledge_loss(
                views, labels[half], knowledge[half], 4.0
            )
            want += float(total) / 16.0
        self.assertAllClose(loss, want, rtol=1e-4)
        self.assertBetween(float(correct), 0.0, 8.0)

    def test_mirrored_step_keeps_replicas_identical(self):
        strategy = _mirrored()
        trainer, ds, _ = self._make(strategy)
        it = iter(strategy.experimental_distribute_dataset(ds))
        stats = trainer.train_loop([it], 2)
        self.assertTrue(np.isfinite(stats[0]["loss"]))
        for var in trainer.nets[0].weights:
            a, b = strategy.experimental_local_results(var.value)
            self.assertAllClose(a, b, atol=0, rtol=0)


class _TeacherTrainer(trainer_lib.Trainer):
    """Regresses onto a frozen teacher run inside the `forward` hook."""

    def __init__(self, *args, teacher, **kwargs):
        self.teacher = teacher
        super().__init__(*args, **kwargs)

    def forward(self, net_index, images):
        student = super().forward(net_index, images)
        return student, tf.stop_gradient(self.teacher(images, training=False))

    def compute_loss(self, net_index, logits, labels, images):
        student, teacher = logits
        return tf.reduce_sum(tf.square(student - teacher)) / (
            self.global_batch_size
        )

    def count_correct(self, net_index, logits, labels):
        return super().count_correct(net_index, logits[0], labels)


class TrainerHooksTest(tf.test.TestCase):
    def test_teacher_forward_inside_jit_and_accumulation(self):
        # The public `forward` hook lets a subclass run extra nets inside
        # the per-replica, XLA-compiled grad fn (what EKG's two views need).
        def tiny(seed):
            keras.utils.set_random_seed(seed)
            inputs = keras.Input((6, 6, 3))
            x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
            x = keras.layers.GlobalAveragePooling2D()(x)
            return keras.Model(inputs, keras.layers.Dense(5)(x))

        net, teacher = tiny(0), tiny(1)
        opt = optimizers.TorchSGD(0.1)
        trainer = _TeacherTrainer(
            [net],
            [opt],
            tf.distribute.get_strategy(),
            teacher=teacher,
            global_batch_size=8,
            jit=True,
            accum_steps=2,
        )
        rng = np.random.default_rng(0)
        images = rng.uniform(0, 1, (8, 6, 6, 3)).astype("float32")
        labels = rng.integers(0, 5, 8).astype("int32")
        loss, correct, grads = trainer._grad_fns[0](
            tf.constant(images), tf.constant(labels)
        )
        student = net(images).numpy()
        want = np.square(student - teacher(images).numpy()).sum() / 8
        self.assertAllClose(loss, want, rtol=1e-4)
        self.assertGreater(float(loss), 1e-4)
        self.assertEqual(
            float(correct), float((student.argmax(-1) == labels).sum())
        )
        self.assertLen(grads, len(net.trainable_variables))
        self.assertTrue(all(np.isfinite(g.numpy()).all() for g in grads))


class DataTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.source = data_lib.load_source(
            "synthetic", synthetic_train_size=200, synthetic_test_size=20
        )

    def test_search_split(self):
        sets = ekg_data.search_split(
            self.source, train_per_class=5, val_per_class=3, seed=1
        )
        labels = self.source.arrays("train")[1]
        classes = np.unique(labels)
        self.assertLen(sets.val_labels, 3 * len(classes))
        counts = np.bincount(sets.train_labels)
        self.assertEqual(counts[classes].max(), 5)
        # Disjoint: no val image appears in train_sub.
        train = {x.tobytes() for x in sets.train_images}
        self.assertFalse(any(x.tobytes() in train for x in sets.val_images))
        again = ekg_data.search_split(
            self.source, train_per_class=5, val_per_class=3, seed=1
        )
        self.assertAllEqual(again.val_images, sets.val_images)
        with self.assertRaisesRegex(
            data_lib.DataError, "^val_per_class=1000: class 0 has only"
        ):
            ekg_data.search_split(self.source, val_per_class=1000)

    def test_search_rows_are_the_references(self):
        # Class 0: rows 0 3 6 9 12 14, class 1: 1 4 7 10 13, class 2: 2 5
        # 8 11. val (2 per class, last first): 14 12 13 10 11 8; train_sub
        # (first 2): 0 3 1 4 2 5; each shuffled by np.random.seed(1).
        labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 0])
        train, val = ekg_data.search_indices(
            labels, train_per_class=2, val_per_class=2, seed=1
        )
        self.assertAllEqual(val, [13, 12, 11, 14, 10, 8])
        self.assertAllEqual(train, [1, 3, 2, 0, 4, 5])
        # The reference's sampler (dataloader/CIFAR.py), on shuffled labels
        # (500 per class, as cifar10-study) with the default sizes.
        labels = np.random.default_rng(3).permutation(np.repeat(range(10), 500))

        def sampler(sample_rate):
            rows = []
            for c in range(labels.max() + 1):
                idx = np.where(labels == c)[0]
                rows.append(
                    idx[:sample_rate]
                    if sample_rate > 0
                    else idx[: sample_rate - 1 : -1]
                )
            rows = np.hstack(rows)
            state = np.random.get_state()
            np.random.seed(1)
            np.random.shuffle(rows)
            np.random.set_state(state)
            return rows

        train, val = ekg_data.search_indices(labels)
        self.assertAllEqual(val, sampler(-32))
        self.assertAllEqual(train, sampler(256))

    def test_search_split_keeps_images_labels_and_rows_aligned(self):
        labels = np.array([2, 0, 1, 1, 0, 2, 2, 1, 0, 0, 1, 2], np.int32)
        # Image k is filled with k: the rows can be read off the pixels.
        images = np.broadcast_to(
            np.arange(12, dtype=np.uint8)[:, None, None, None], (12, 4, 4, 3)
        )
        info = data_lib.DatasetInfo(
            name="rows",
            num_classes=3,
            image_shape=(4, 4, 3),
            num_train=12,
            num_test=1,
            mean=(0.5,) * 3,
            std=(0.25,) * 3,
            recipe="cifar",
            class_names=("a", "b", "c"),
        )
        source = data_sources.ArraySource(
            info,
            {"train": (images, labels), "test": (images[:1], labels[:1])},
        )
        sets = ekg_data.search_split(
            source, train_per_class=2, val_per_class=2, seed=1
        )
        want_train, want_val = ekg_data.search_indices(
            labels, train_per_class=2, val_per_class=2, seed=1
        )
        self.assertAllEqual(sets.val_index, want_val)
        self.assertAllEqual(sets.train_index, want_train)
        self.assertAllEqual(sets.val_images[:, 0, 0, 0], want_val)
        self.assertAllEqual(sets.train_images[:, 0, 0, 0], want_train)
        self.assertAllEqual(sets.val_labels, labels[want_val])
        self.assertAllEqual(sets.train_labels, labels[want_train])
        # val: class by class, the last two rows of each, last first.
        self.assertCountEqual(sets.val_index, [9, 8, 10, 7, 11, 6])

    def test_crop_and_colour_are_per_batch_flip_per_image(self):
        h = w = 8
        rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        image = np.stack([rows, cols, np.zeros_like(rows)], -1) * 10 + 50
        images = np.repeat(image[None], 16, 0).astype("float32")
        for jitter in (False, True):
            out = ekg_data.ekg_augment(
                images, tf.constant([3, 4], tf.int64), jitter=jitter
            ).numpy()
            self.assertEqual(out.shape, images.shape)
            # Identical inputs: one crop offset and one set of colour
            # factors per batch leave exactly two outputs, flipped or not.
            distinct = {o.tobytes() for o in out}
            self.assertLen(distinct, 2)
        plain = ekg_data.ekg_augment(images, tf.constant([3, 4], tf.int64))
        # Without jitter the pixel values are the image's own (reflect pad).
        self.assertAllInSet(np.unique(plain.numpy()), np.unique(images))

    def test_train_dataset_views_knowledge_and_resume(self):
        images, labels = self.source.arrays("train")
        n = len(labels)
        knowledge = np.zeros((n, 10, 2), np.float32)
        knowledge[:, 0, 0] = np.arange(n)
        ds = ekg_data.train_dataset(
            self.source,
            batch_size=16,
            seed=3,
            views=2,
            jitter=True,
            knowledge=knowledge,
        )
        batches = list(ds.take(3).as_numpy_iterator())
        x, (y, k) = batches[0]
        self.assertEqual(x.shape, (16, 2, 32, 32, 3))
        self.assertEqual(k.shape, (16, 10, 2))
        index = k[:, 0, 0].astype(int)
        self.assertAllEqual(y, labels[index])
        resumed = ekg_data.train_dataset(
            self.source,
            batch_size=16,
            seed=3,
            start_step=2,
            views=2,
            jitter=True,
            knowledge=knowledge,
        )
        x2, (y2, _) = next(resumed.as_numpy_iterator())
        self.assertAllEqual(x2, batches[2][0])
        self.assertAllEqual(y2, batches[2][1][0])


class PretrainedTest(tf.test.TestCase):
    def test_mismatching_checkpoint_is_one_line_error(self):
        net = _tiny_resnet(0)
        path = tf.train.Checkpoint(net_0=net).write(
            os.path.join(self.get_temp_dir(), "ck")
        )
        other = models.build_model("resnet20", preset="ekg", width_mult=0.5)
        with self.assertRaises(pretrained.PretrainedError) as e:
            pretrained.load(path, other, "resnet20")
        message = str(e.exception)
        self.assertNotIn("\n", message)
        self.assertStartsWith(message, f"--pretrained={path}: ")
        self.assertIn("does not match --model=resnet20", message)
        same = _tiny_resnet(1)
        pretrained.load(path, same, "resnet20")
        self.assertAllEqual(same.get_weights()[0], net.get_weights()[0])

    def test_workdir_config_must_match(self):
        workdir = os.path.join(self.get_temp_dir(), "run")
        os.makedirs(os.path.join(workdir, "checkpoints"))
        net = _tiny_resnet(0)
        tf.train.CheckpointManager(
            tf.train.Checkpoint(net_0=net),
            os.path.join(workdir, "checkpoints"),
            1,
        ).save()
        trained = {"model": {"name": "resnet20", "width_mult": 0.25}}
        kind, _, _ = pretrained.resolve(workdir)
        self.assertEqual(kind, "checkpoint")
        mine = cfg.ModelConfig("resnet20", width_mult=0.25, preset="ekg")
        with self.assertRaisesRegex(pretrained.PretrainedError, "--preset"):
            pretrained.check_config(workdir, trained, mine)
        trained["model"]["preset"] = "ekg"
        pretrained.check_config(workdir, trained, mine)

    def test_missing_path(self):
        with self.assertRaisesRegex(pretrained.PretrainedError, "no such"):
            pretrained.resolve("/nonexistent/run")

    def test_damaged_workdir_config_is_one_line(self):
        workdir = os.path.join(self.get_temp_dir(), "damaged")
        os.makedirs(os.path.join(workdir, "checkpoints"))
        config_path = os.path.join(workdir, "config.json")
        with open(config_path, "w") as f:
            f.write('{"model": {"name": ')
        with self.assertRaises(cfg.ConfigError) as e:
            pretrained.resolve(workdir)
        message = str(e.exception)
        self.assertNotIn("\n", message)
        self.assertStartsWith(message, f"{config_path}: unreadable (")


if __name__ == "__main__":
    tf.test.main()
