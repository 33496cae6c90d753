"""Tests for the EKG Python API: `search_subnet` and `KnowledgeModel`.

A hand-built functional CNN (not from the zoo: a residual add written as
`x + y`, a projection block, a `Rescaling` input layer) goes through the
whole API; on a zoo model the API and `EKGJob` search the same
sub-network (marked large).
"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfgraft.ekg as ekg
from tfgraft import complexity
from tfgraft import config as cfg
from tfgraft import graph as graph_lib
from tfgraft import experiment as base_job
from tfgraft import models
from tfgraft import pretrained as pretrained_lib
from tfgraft.ekg import data as ekg_data
from tfgraft.ekg import job as job_lib
from tfgraft.ekg import memory_bank as bank_lib
from tfgraft.ekg import trainer as ekg_trainer
from tfgraft.testing import test_case
from tfgraft.training import optimizers

TARGET = 0.6


def _my_model(seed=0):
    """A user's CNN: 8x8 inputs, stem, identity block, projection block."""
    model = test_case.mini_resnet(
        seed, rescale=True, operator_add=True, name="mine"
    )
    # Non-trivial BN state, so a wrongly sliced channel shows in the logits.
    return test_case.randomize_bn(model, seed)


def _data(seed, n):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 8, 8, 3)).astype("uint8")
    return images, rng.integers(0, 10, n).astype("int32")


class SearchSubnetTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = _my_model()
        cls.before = [w.copy() for w in cls.model.get_weights()]
        cls.train = _data(0, 48)
        cls.val = _data(1, 40)
        cls.result = ekg.search_subnet(
            cls.model,
            cls.train,
            cls.val,
            target_flops_rate=TARGET,
            batch_size=16,
        )

    def test_flops_rate_meets_the_target_at_the_first_step_below_it(self):
        r = self.result
        self.assertLessEqual(r.flops_rate, TARGET)
        self.assertTrue(all(h.flops_rate > TARGET for h in r.search.history))
        # The compact model's count is the search's exact FLOPs model.
        self.assertEqual(r.flops["ekg"]["after"], r.search.final.flops)
        self.assertEqual(
            r.flops["ekg"]["before"], complexity.count(self.model, "ekg").flops
        )
        self.assertEqual(
            r.params["macs"]["after"],
            complexity.count(r.model, "macs").params,
        )
        self.assertLess(r.params["ekg"]["after"], r.params["ekg"]["before"])

    def test_compact_equals_the_masked_gated_network(self):
        r = self.result
        x = np.random.default_rng(2).uniform(0, 255, (6, 8, 8, 3))
        x = x.astype("float32")
        for training in (False, True):
            self.assertAllClose(
                r.model(x, training=training),
                r.gated.model(x, training=training),
                atol=1e-5,
                rtol=1e-5,
            )

    def test_widths_filters_and_the_compact_graph_agree(self):
        r = self.result
        kept = r.gated.kept()
        self.assertEqual(list(r.widths.values()), kept)
        self.assertLess(sum(kept), sum(i.channels for i in r.gated.info))
        for info, k in zip(r.gated.info, kept):
            for conv in info.producers:
                self.assertEqual(r.model.get_layer(conv).filters, k)
                if k < info.channels:
                    self.assertEqual(r.filters[conv], k)
        # The residual stream of the identity block is one group.
        stream = [i for i in r.gated.info if i.num_calls == 2]
        self.assertLen(stream, 2)
        self.assertEqual(
            [layer.name for layer in r.model.layers],
            [layer.name for layer in self.model.layers],
        )
        self.assertIsNone(r.channel_config)

    def test_the_model_passed_in_is_not_changed(self):
        # The warm-up trains a copy.
        self.assertIsNotNone(self.result.warmup_loss)
        for a, b in zip(self.model.get_weights(), self.before):
            self.assertAllEqual(a, b)

    def test_bank_holds_history_and_teacher_logits(self):
        r = self.result
        history = r.search.history
        self.assertEqual(int(r.bank.count), len(history))
        self.assertAllClose(
            r.bank.stored_losses(), [h.val_loss for h in history]
        )
        self.assertEqual(r.knowledge.shape, (48, 10, 5))
        self.assertEqual(
            r.teachers,
            bank_lib.select_teachers([h.val_loss for h in history], 5),
        )
        snapshots = [
            (history[t].orders, history[t].rates) for t in r.teachers
        ]
        want = bank_lib.compute_knowledge(r.gated, snapshots, self.train[0], 16)
        self.assertAllEqual(r.knowledge, want)
        self.assertAllEqual(r.bank.teachers, r.teachers)

    def test_without_train_data_or_warmup(self):
        r = ekg.search_subnet(
            self.model,
            None,
            self.val,
            target_flops_rate=0.8,
            batch_size=16,
            warmup=False,
            search_knowledge=False,
        )
        self.assertIsNone(r.knowledge)
        self.assertIsNone(r.warmup_loss)
        self.assertLessEqual(r.flops_rate, 0.8)
        for h in r.search.history[1:] + [r.search.final]:
            self.assertEqual(h.val_score, h.val_loss)


class ErrorsTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = _my_model()
        cls.val = _data(1, 16)

    def _call(self, *, model=None, train=None, val=None, **kwargs):
        kwargs.setdefault("warmup", False)
        return ekg.search_subnet(
            model or self.model, train, val or self.val, **kwargs
        )

    def test_arguments_are_named(self):
        cases = [
            (dict(target_flops_rate=1.5), "^target_flops_rate must be in"),
            (dict(search_step=0), "^search_step must be in"),
            (dict(cost_mode="x"), "^cost_mode must be one of"),
            (dict(batch_size=0), "^batch_size must be an int"),
            (dict(num_teachers=0), "^num_teachers must be an int"),
            (dict(warmup=True), "^warmup=True needs train_data"),
            (
                dict(val=(np.zeros((4, 9, 9, 3)), np.zeros(4, int))),
                r"^val_data images must be \[N, 8, 8, 3\]",
            ),
            (
                dict(val=(np.zeros((4, 8, 8, 3)), np.zeros(3, int))),
                "^val_data needs one int label per image",
            ),
            (
                dict(val=(np.zeros((4, 8, 8, 3)), np.full(4, 10))),
                r"^val_data labels must lie in \[0, 10\)",
            ),
            (
                dict(train=np.zeros((4, 8, 8, 3))),
                r"^train_data must be a pair \(images, labels\)",
            ),
            (
                dict(channel_config=models.default_channel_config("resnet20")),
                "^channel_config needs slots",
            ),
        ]
        for kwargs, message in cases:
            with self.subTest(message=message):
                with self.assertRaisesRegex(ekg.EKGError, message):
                    self._call(**kwargs)

    def test_models_it_cannot_search(self):
        inputs = keras.Input((8, 8, 3))
        x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
        x = keras.layers.GlobalAveragePooling2D()(x)
        fused = keras.Model(inputs, keras.layers.Dense(10)(x), name="fused")
        with self.assertRaisesRegex(
            ekg.EKGError, "^model 'fused' has no channel group EKG can prune"
        ):
            self._call(model=fused)

        class Subclassed(keras.Model):
            def call(self, x):
                return x

        with self.assertRaisesRegex(graph_lib.GraphError, "not a functional"):
            self._call(model=Subclassed())


class KnowledgeModelTest(tf.test.TestCase):
    def _net(self):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((8, 8, 3))
        x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
        return keras.Model(inputs, keras.layers.Dense(5)(x))

    def test_fit_step_equals_the_jobs_knowledge_trainer(self):
        rng = np.random.default_rng(0)
        images = rng.uniform(0, 255, (8, 2, 8, 8, 3)).astype("float32")
        labels = rng.integers(0, 5, 8).astype("int32")
        knowledge = rng.normal(size=(8, 5, 3)).astype("float32") * 3
        batch = (images, (labels, knowledge))

        def sgd():
            return optimizers.TorchSGD(
                0.1, momentum=0.9, nesterov=True, weight_decay=5e-4
            )

        net = self._net()
        strategy = tf.distribute.get_strategy()
        trainer = ekg_trainer.KnowledgeTrainer(
            [net], [sgd()], strategy, global_batch_size=8, jit=False
        )
        ds = tf.data.Dataset.from_tensors(batch).repeat()
        stats = trainer.train_loop([iter(ds)], 2)

        student = self._net()
        wrapper = ekg.KnowledgeModel(student, temperature=4.0)
        wrapper.compile(optimizer=sgd(), jit_compile=False)
        history = wrapper.fit(ds, steps_per_epoch=2, epochs=1, verbose=0)
        for a, b in zip(student.get_weights(), net.get_weights()):
            self.assertAllClose(a, b, atol=1e-6, rtol=1e-6)
        self.assertAllClose(
            history.history["loss"][0], stats[0]["loss"], rtol=1e-5
        )
        # Plain (images, labels) evaluate: CE of the student.
        x, y = images[:, 0], labels
        out = wrapper.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
        logits = student(x, training=False)
        ce = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits)
        )
        self.assertAllClose(out["loss"], ce, rtol=1e-5)

    def test_knowledge_dataset_is_the_jobs_stream(self):
        images, labels = _data(3, 12)
        knowledge = np.random.default_rng(0).normal(size=(12, 10, 2))
        knowledge = knowledge.astype("float32")
        ours = ekg.knowledge_dataset(
            images, labels, knowledge, batch_size=4, seed=5
        )
        theirs = ekg_data.array_dataset(
            images,
            labels,
            batch_size=4,
            seed=5,
            views=2,
            jitter=True,
            knowledge=knowledge,
        )
        for (a, (la, ka)), (b, (lb, kb)) in zip(
            ours.take(4), theirs.take(4)
        ):
            self.assertEqual(a.shape, (4, 2, 8, 8, 3))
            self.assertAllEqual(a, b)
            self.assertAllEqual(la, lb)
            self.assertAllEqual(ka, kb)
        with self.assertRaisesRegex(ValueError, "^batch_size must be in"):
            ekg.knowledge_dataset(images, labels, knowledge, batch_size=13)

    def test_errors_name_the_argument(self):
        with self.assertRaisesRegex(ekg.EKGError, "^temperature must be > 0"):
            ekg.KnowledgeModel(self._net(), temperature=0)
        with self.assertRaisesRegex(ekg.EKGError, "^student must be"):
            ekg.KnowledgeModel("net")
        wrapper = ekg.KnowledgeModel(self._net())
        with self.assertRaisesRegex(
            ekg.EKGError, "^KnowledgeModel.compile: loss is fixed"
        ):
            wrapper.compile(optimizer="sgd", loss="mse")


@pytest.mark.large
class JobEquivalenceTest(tf.test.TestCase):
    """`search_subnet` on a zoo model == the job's search (same inputs)."""

    def test_zoo_model_searches_the_jobs_subnetwork(self):
        root = self.get_temp_dir()
        data = cfg.DataConfig(
            batch_size=64,
            eval_batch_size=64,
            synthetic_train_size=256,
            synthetic_test_size=64,
        )
        model_cfg = cfg.ModelConfig("resnet20", width_mult=0.25, preset="ekg")
        run = cfg.RunConfig(epochs=1, progress=False, strategy="default")
        pretrained = os.path.join(root, "pretrain")
        base_job.Method(
            cfg.JobConfig(
                data=data,
                model=model_cfg,
                optim=cfg.OptimConfig(learning_rate=0.05, nesterov=True),
                run=run,
            )
        ).run(pretrained)
        e = cfg.EKGConfig(
            pretrained=pretrained,
            target_flops_rate=0.75,
            batch_size=64,
            train_per_class=8,
            val_per_class=6,
        )
        config = cfg.JobConfig(
            data=data, model=model_cfg, optim=cfg.OptimConfig(), run=run, ekg=e
        )
        job = job_lib.EKG(config)
        ex = base_job.Experiment(job, os.path.join(root, "ekg"))
        ex.setup()
        ex.load_data()
        job.search(ex)
        r = job.search_result

        info = ex.info
        model = models.build_model(
            "resnet20",
            width_mult=0.25,
            preset="ekg",
            num_classes=info.num_classes,
            input_shape=info.image_shape,
            mean=info.mean,
            std=info.std,
        )
        pretrained_lib.load(pretrained, model, "resnet20")
        sets = ekg_data.search_split(
            ex.source, train_per_class=8, val_per_class=6, seed=1
        )
        slots = models.layer_slots("resnet20", preset="ekg")
        full = models.model_channel_config(model_cfg)
        ours = ekg.search_subnet(
            model,
            ex.source.arrays("train"),
            (sets.val_images, sets.val_labels),
            target_flops_rate=0.75,
            batch_size=64,
            warmup_data=(sets.train_images, sets.train_labels),
            slots=slots,
            channel_config=full,
        )
        self.assertEqual(dict(ours.channel_config.widths), r["channel_config"])
        steps = [h.to_json() for h in ours.search.entries]
        for mine, theirs in zip(steps, r["history"] + [r["final"]]):
            mine.pop("seconds")
            theirs = {k: v for k, v in theirs.items() if k != "seconds"}
            self.assertEqual(mine, theirs)
        self.assertEqual(ours.teachers, r["teachers"])
        self.assertEqual(ours.flops, r["flops"])
        self.assertAllEqual(ours.knowledge, job.knowledge)
        # The graph-rebuilt compact net is the zoo's compact net.
        x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3))
        x = x.astype("float32")
        for training in (False, True):
            self.assertAllClose(
                ours.model(x, training=training),
                job.compact(x, training=training),
                atol=1e-5,
                rtol=1e-5,
            )


if __name__ == "__main__":
    tf.test.main()
