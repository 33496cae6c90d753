"""End-to-end jobs on tiny synthetic runs: workdir contract, export, resume."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tfgraft import config as cfg
from tfgraft import experiment as job_lib
from tfgraft.grafting import job as graft_job
from tfgraft.training import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(epochs=2, max_steps=0, graft=None, **run):
    return cfg.JobConfig(
        data=cfg.DataConfig(
            batch_size=32,
            eval_batch_size=50,
            synthetic_train_size=128,
            synthetic_test_size=64,
        ),
        model=cfg.ModelConfig(name="resnet20", width_mult=0.25),
        optim=cfg.OptimConfig(learning_rate=0.05, schedule="cosine"),
        run=cfg.RunConfig(
            epochs=epochs,
            max_steps=max_steps,
            progress=False,
            strategy="default",
            **run,
        ),
        graft=graft,
    )


def _weights(job):
    return [[w.numpy() for w in net.weights] for net in job.trainer.nets]


def _summary_steps(workdir, tag):
    """The steps at which the run's TensorBoard events hold `tag`."""
    steps = []
    for path in sorted(
        tf.io.gfile.glob(os.path.join(workdir, "summaries", "events.*"))
    ):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == tag:
                    steps.append(int(event.step))
    return steps


def _assert_same(test, a, b, atol=1e-6):
    for net_a, net_b in zip(a, b):
        for x, y in zip(net_a, net_b):
            test.assertAllClose(x, y, atol=atol)


def _first(steps, seconds):
    return {"steps": steps, "seconds": seconds}


class SteadyImagesPerSecTest(tf.test.TestCase):
    def test_first_loops_left_out(self):
        history = [
            {"step": 4, "seconds": 5.0, "first_loop": _first(2, 4.0)},
            {"step": 8, "seconds": 2.0},
            {"step": 12, "seconds": 3.0, "first_loop": _first(1, 1.5)},
        ]
        # (12 - 2 - 1) steps in (10 - 4 - 1.5) s, 16 images a step.
        self.assertAllClose(
            job_lib.steady_images_per_sec(history, 16), 9 * 16 / 4.5
        )

    def test_nothing_but_first_loops_is_none(self):
        history = [{"step": 4, "seconds": 5.0, "first_loop": _first(4, 5.0)}]
        self.assertIsNone(job_lib.steady_images_per_sec(history, 16))


@pytest.mark.large
class RestoreItemsTest(tf.test.TestCase):
    def test_written_and_managed_checkpoints_and_one_line_errors(self):
        source = {"a": tf.Variable([1.0, 2.0]), "b": tf.Variable(3.0)}
        written = tf.train.Checkpoint(**source).write(
            os.path.join(self.get_temp_dir(), "written")
        )
        managed = tf.train.CheckpointManager(
            tf.train.Checkpoint(**source),
            os.path.join(self.get_temp_dir(), "managed"),
            1,
        ).save()
        for path in (written, managed):
            target = {"a": tf.Variable([0.0, 0.0]), "b": tf.Variable(0.0)}
            job_lib.restore_items(path, target)
            self.assertAllEqual(target["a"], [1.0, 2.0])
            self.assertEqual(float(target["b"]), 3.0)
        with self.assertRaises(loop.CheckpointError) as e:
            job_lib.restore_items(written, {"c": tf.Variable(0.0)})
        message = str(e.exception)
        self.assertNotIn("\n", message)
        self.assertStartsWith(message, f"{written}: cannot restore c (")


class BaselineJobTest(tf.test.TestCase):
    def test_workdir_contract_and_export_round_trip(self):
        workdir = self.create_tempdir().full_path
        job = job_lib.Experiment(
            job_lib.Method(_config()), workdir, flags_text="--epochs=2\n"
        )
        report = job.run()
        for name in (
            "flags.cfg",
            "config.json",
            "data_info.json",
            "history.json",
            "report.json",
            "checkpoints",
            "summaries",
            "export/saved_model.pb",
        ):
            self.assertTrue(os.path.exists(os.path.join(workdir, name)), name)
        net = report["nets"][0]
        self.assertEqual(report["epochs"], 2)
        self.assertEqual(report["steps"], 8)
        self.assertBetween(net["final_top1"], 0.0, 1.0)
        self.assertEqual(
            net["params"], job_lib.count_params(job.trainer.nets[0])
        )
        self.assertGreater(net["flops"], 0)
        self.assertNotEmpty(os.listdir(os.path.join(workdir, "summaries")))

        # The export serves raw images in a process that never imports
        # tfgraft, and matches the Keras model.
        images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3))
        images = images.astype("float32")
        np.save(os.path.join(workdir, "x.npy"), images)
        script = textwrap.dedent(
            f"""
            import sys, numpy as np, tensorflow as tf
            m = tf.saved_model.load({os.path.join(workdir, "export")!r})
            x = np.load({os.path.join(workdir, "x.npy")!r})
            np.save({os.path.join(workdir, "y.npy")!r}, m.serve(x).numpy())
            np.save({os.path.join(workdir, "y8.npy")!r},
                    m.serve_uint8(x.astype("uint8")).numpy())
            assert "tfgraft" not in sys.modules
            """
        )
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH="")
        subprocess.run(
            [sys.executable, "-c", script], check=True, env=env, cwd="/"
        )
        served = np.load(os.path.join(workdir, "y.npy"))
        keras_logits = job.trainer.nets[0](images, training=False).numpy()
        self.assertAllClose(served, keras_logits, atol=1e-5)
        served8 = np.load(os.path.join(workdir, "y8.npy"))
        uint8 = images.astype("uint8").astype("float32")
        self.assertAllClose(
            served8, job.trainer.nets[0](uint8, training=False), atol=1e-5
        )

    def test_resume_continues_at_the_right_step_with_same_lr(self):
        full_dir = self.create_tempdir().full_path
        full = job_lib.Experiment(job_lib.Method(_config(epochs=3)), full_dir)
        full.run()

        split_dir = self.create_tempdir().full_path
        first = job_lib.Experiment(
            job_lib.Method(_config(epochs=3, max_steps=4)), split_dir
        )
        first.run()
        self.assertEqual(int(first.trainer.global_step.numpy()), 4)
        lr_after_first = first.trainer.learning_rates()
        second = job_lib.Experiment(
            job_lib.Method(_config(epochs=3)), split_dir
        )
        second.setup()
        second.load_data()
        second.build()
        from tfgraft.training import loop

        items = dict(second.trainer.checkpoint_items())
        items["history"] = tf.Variable("[]")
        ckpt = tf.train.Checkpoint(**items)
        manager = tf.train.CheckpointManager(
            ckpt, os.path.join(split_dir, "checkpoints"), 3
        )
        loop.restore(ckpt, manager)
        self.assertEqual(int(second.trainer.global_step.numpy()), 4)
        self.assertAllClose(second.trainer.learning_rates(), lr_after_first)

        resumed = job_lib.Experiment(
            job_lib.Method(_config(epochs=3)), split_dir
        )
        report = resumed.run()
        self.assertEqual(report["steps"], 12)
        self.assertEqual(report["epochs"], 3)
        # Each session's first loop (tracing) is recorded once, in the
        # epoch it ran in, and left out of the steady-state figure.
        with open(os.path.join(split_dir, "history.json")) as f:
            history = json.load(f)
        firsts = [h["epoch"] for h in history if "first_loop" in h]
        self.assertEqual(firsts, [1, 2])
        self.assertLen(report["first_loop_seconds"], 2)
        self.assertEqual(
            report["steady_images_per_sec"],
            job_lib.steady_images_per_sec(
                history, resumed.config.data.batch_size
            ),
        )
        _assert_same(self, _weights(full), _weights(resumed), atol=1e-5)


@pytest.mark.large
class GraftingJobTest(tf.test.TestCase):
    def test_two_nets_report_exports_and_resume(self):
        graft = cfg.GraftConfig(num_nets=2, difflr=True)
        full_dir = self.create_tempdir().full_path
        full = job_lib.Experiment(
            graft_job.Grafting(_config(epochs=3, graft=graft)), full_dir
        )
        report = full.run()
        self.assertEqual(report["num_nets"], 2)
        self.assertLen(report["nets"], 2)
        self.assertIn("ensemble", report)
        self.assertEqual(report["grafting"]["grafts_this_session"], 2)
        # Two grafts: the first (tracing) alone, the second is the median.
        g = report["grafting"]
        self.assertGreater(g["graft_seconds_first"], 0)
        self.assertGreater(g["graft_seconds_median"], 0)
        self.assertNotEqual(g["graft_seconds_first"], g["graft_seconds_median"])
        self.assertAllClose(report["grafting"]["initial_lr"], [0.025, 0.05])
        for key in ("start", "end"):
            self.assertLen(report["invalid_filters"][key], 2)
        for sub in ("net_0", "net_1", "best"):
            path = os.path.join(full_dir, "export", sub, "saved_model.pb")
            self.assertTrue(os.path.exists(path), sub)
        self.assertCountEqual(
            report["export_seconds"],
            ["export/net_0", "export/net_1", "export/best"],
        )
        # Eval speed: images x nets per second, the later evaluations'
        # median (the first traces); every eval counted the 64 images.
        self.assertIsInstance(report["eval_images_per_sec"], float)
        self.assertIsInstance(report["eval_images_per_sec_first"], float)
        self.assertTrue(os.path.exists(os.path.join(full_dir, "grafting.png")))
        with open(os.path.join(full_dir, "history.json")) as f:
            history = json.load(f)
        self.assertIn("graft", history[0])
        self.assertIn("graft", history[1])
        self.assertEqual([h["test"]["images"] for h in history], [64] * 3)
        self.assertAllClose(
            [h["eval_images_per_sec"] for h in history],
            [64 / h["eval_seconds"] for h in history],
        )
        # The report's unit is images x nets (2 nets).
        rates = [2 * h["eval_images_per_sec"] for h in history]
        self.assertAllClose(
            report["eval_images_per_sec"], np.median(rates[1:])
        )
        self.assertAllClose(report["eval_images_per_sec_first"], rates[0])
        self.assertNotEqual(
            history[0]["graft"]["mean_alpha"], history[1]["graft"]["mean_alpha"]
        )
        # The last epoch's graft is skipped: it has no graft record, and
        # TensorBoard gets one alpha per graft, none repeated.
        self.assertNotIn("graft", history[2])
        self.assertNotIn("net_0/graft_alpha", history[2].get("scalars", {}))
        alpha_steps = _summary_steps(full_dir, "net_0/graft_alpha")
        self.assertEqual(alpha_steps, [h["step"] for h in history[:2]])
        # The best export is the best pre-graft net of the history.
        best = report["best"]
        accs = [h["test"]["nets"][best["net"]]["top1"] for h in history]
        self.assertAllClose(best["top1"], max(accs))

        split_dir = self.create_tempdir().full_path
        graft_job.Grafting(_config(epochs=3, max_steps=4, graft=graft)).run(
            split_dir
        )
        resumed = job_lib.Experiment(
            graft_job.Grafting(_config(epochs=3, graft=graft)), split_dir
        )
        resumed.run()
        _assert_same(self, _weights(full), _weights(resumed), atol=1e-5)


class ConfigValidationTest(tf.test.TestCase):
    def test_bad_graft_values_name_the_flag(self):
        cases = [
            (dict(num_nets=1), "--num_nets=1"),
            (dict(num_nets=9), "--num_nets=9"),
            (dict(criterion="kl"), "--criterion=kl"),
            (dict(level="block"), "--level=block"),
            (dict(a=1.5), "--graft_a=1.5"),
            (dict(c=0.0), "--graft_c=0.0"),
        ]
        for kwargs, message in cases:
            with self.assertRaisesRegex(cfg.ConfigError, message):
                cfg.GraftConfig(**kwargs)

    def test_round_trip_through_dict(self):
        config = _config(graft=cfg.GraftConfig(num_nets=3))
        again = cfg.JobConfig.from_dict(
            json.loads(json.dumps(config.to_dict()))
        )
        self.assertEqual(again, config)


if __name__ == "__main__":
    tf.test.main()
