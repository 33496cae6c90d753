"""End-to-end tests of the stripe job, its flags and configs."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from absl.testing import parameterized

from tfgraft import complexity
from tfgraft import config as cfg
from tfgraft import data as data_lib
from tfgraft import experiment as base_job
from tfgraft.layers.stripe_conv import CompactStripeConv2D
from tfgraft.layers.stripe_conv import FORMULATIONS
from tfgraft.layers.stripe_conv import StripeConv2D
from tfgraft.stripe import job as job_lib
from tfgraft.stripe import skeleton
from tfgraft.study import figures as study_figures
from tfgraft.testing import devices
from tfgraft.testing import test_case
from train import flags as flags_lib

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _mirrored():
    # One strategy per process, shared with the other test files.
    return devices.mirrored_strategy()


def _config(**stripe):
    return cfg.JobConfig(
        data=cfg.DataConfig(
            dataset="synthetic",
            batch_size=32,
            eval_batch_size=64,
            synthetic_train_size=128,
            synthetic_test_size=64,
        ),
        model=cfg.ModelConfig(name="resnet20", width_mult=0.25),
        optim=cfg.OptimConfig(
            learning_rate=0.1, weight_decay=1e-4, schedule="constant"
        ),
        run=cfg.RunConfig(epochs=2, seed=1, progress=False),
        stripe=cfg.StripeConfig(**stripe),
    )


class StripeConfigTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("threshold", dict(threshold=-0.01), "--threshold=-0.01: must be >= 0"),
        ("sr", dict(sr=-1.0), "--sr=-1.0: must be >= 0"),
        ("formulation", dict(formulation="fft"), "--formulation=fft"),
        (
            "calibrate_batch",
            dict(formulation="calibrate", calibrate_batch=0),
            "--calibrate_batch=0: must be >= 1",
        ),
        (
            "target_above_one",
            dict(target_flops_cut=1.5),
            r"--target_flops_cut=1.5: must be in \(0, 1\)",
        ),
        (
            "target_nan",
            dict(target_flops_cut=float("nan")),
            "--target_flops_cut=nan",
        ),
        (
            "target_negative",
            dict(target_flops_cut=-0.5),
            "--target_flops_cut=-0.5",
        ),
        (
            "tolerance",
            dict(target_tolerance=-0.01),
            r"--target_tolerance=-0.01: must be in \[0, 1\)",
        ),
        (
            "extra_cut_range",
            dict(target_flops_cut=0.5, extra_cuts=(0.3, 1.2)),
            "--extra_cuts=0.3,1.2: every cut must be in",
        ),
        (
            "extra_cuts_need_target",
            dict(extra_cuts=(0.3,)),
            "--extra_cuts=0.3: needs --target_flops_cut",
        ),
        (
            "steer_needs_target",
            dict(sr=1e-3, threshold=0.01, steer_sr=True),
            "^--steer_sr=true: needs --target_flops_cut$",
        ),
        (
            "steer_needs_sr",
            dict(threshold=0.01, target_flops_cut=0.5, steer_sr=True),
            r"--steer_sr=true: needs --sr > 0 and --threshold > 0",
        ),
    )
    def test_bad_values(self, kwargs, message):
        with self.assertRaisesRegex(cfg.ConfigError, message):
            cfg.StripeConfig(**kwargs)

    def test_round_trip(self):
        config = _config(
            sr=1e-5, threshold=0.01, shape_only=True, target_flops_cut=0.7
        )
        back = cfg.JobConfig.from_dict(config.to_dict())
        self.assertEqual(back.stripe, config.stripe)

    def test_job_needs_stripe_config(self):
        with self.assertRaisesRegex(ValueError, "config.stripe"):
            job_lib.Stripe(cfg.JobConfig())

    @parameterized.named_parameters(
        ("resnet56", "stripe_cifar10_resnet56.cfg", "resnet56", False),
        ("vgg16", "stripe_cifar10_vgg16.cfg", "vgg16", False),
        (
            "shape_only",
            "stripe_cifar10_resnet56_shape_only.cfg",
            "resnet56",
            True,
        ),
    )
    def test_paper_recipes(self, name, model, shape_only):
        fv = flags.FlagValues()
        flags_lib.define("common", "stripe", flag_values=fv)
        cwd = os.getcwd()
        os.chdir(ROOT)  # nested flagfile paths resolve against the CWD
        try:
            fv(["prog", f"--flagfile=configs/{name}"])
        finally:
            os.chdir(cwd)
        c = flags_lib.job_config(fv)
        self.assertEqual(c.model.name, model)
        self.assertEqual(c.model.preset, "pff")
        self.assertEqual(
            (c.data.batch_size, c.run.epochs, c.run.seed), (64, 160, 1)
        )
        self.assertEqual(c.optim.learning_rate, 0.1)
        self.assertEqual(c.optim.weight_decay, 1e-4)
        self.assertEqual(c.optim.schedule, "multistep")
        self.assertEqual(c.optim.milestones, (80.0, 120.0))
        self.assertEqual(c.stripe.shape_only, shape_only)
        if shape_only:
            self.assertEqual((c.stripe.sr, c.stripe.threshold), (0.0, 0.0))
        else:
            self.assertEqual((c.stripe.sr, c.stripe.threshold), (1e-5, 0.01))
        # The reference's block removal, and its fixed threshold.
        self.assertEqual(c.stripe.dead_branches, "shortcut")
        self.assertEqual(c.stripe.target_flops_cut, 0.0)

    @parameterized.named_parameters(
        ("imagenet_resnet18", "stripe_imagenet_resnet18.cfg", "shortcut", 0.0),
        ("quick", "stripe_quick.cfg", "constant", 0.5),
    )
    def test_dead_branches_and_target(self, name, dead_branches, target):
        fv = flags.FlagValues()
        flags_lib.define("common", "stripe", flag_values=fv)
        fv(["prog", f"--flagfile={os.path.join(ROOT, 'configs', name)}"])
        c = flags_lib.job_config(fv)
        self.assertEqual(c.stripe.dead_branches, dead_branches)
        self.assertEqual(c.stripe.target_flops_cut, target)
        self.assertEqual(c.stripe.target_tolerance, 0.02)


class BuildNetTest(tf.test.TestCase):
    def test_conv_layer_hook_and_pff_default(self):
        info = data_lib.load_source(
            "synthetic", synthetic_train_size=8, synthetic_test_size=8
        ).info
        job = base_job.Experiment(
            job_lib.Stripe(_config()), self.get_temp_dir()
        )
        # The preset is resolved once, so config.json records it.
        self.assertEqual(job.config.model.preset, "pff")
        net = job.build_net(0, info)
        convs = [
            layer
            for layer in net.layers
            if isinstance(layer, keras.layers.Conv2D)
        ]
        self.assertNotEmpty(convs)
        self.assertTrue(all(isinstance(c, StripeConv2D) for c in convs))
        # PFF preset: BN gamma starts at 0.5.
        self.assertAllClose(net.get_layer("stem_bn").gamma, [0.5] * 4)
        # An explicit preset wins; the base job builds plain convs.
        config = _config()
        config = dataclasses.replace(
            config, model=dataclasses.replace(config.model, preset="dhp")
        )
        job = job_lib.Stripe(config)
        self.assertEqual(job.config.model.preset, "dhp")
        self.assertIsNone(base_job.Method(config).conv_layer)


class _Seeded(job_lib.Stripe):
    """Starts with 40% of the pruned stripes at 0: they must stay dead."""

    def init_net(self, net, index):
        super().init_net(net, index)
        rng = np.random.default_rng(7)
        for name in skeleton.skeleton_plan(net).names():
            fs = net.get_layer(name).filter_skeleton
            values = np.ones(fs.shape, "f4")
            values[rng.random(fs.shape) < 0.4] = 0.0
            values[..., 0] = 1.0  # every layer keeps a filter
            fs.assign(values)


class _DeadBranch(job_lib.Stripe):
    """Starts with every stripe of one block's conv1 at 0 (stays dead).

    The block's bn2 beta starts at 0.5, so the branch's constant output
    (which the reference's shortcut form drops) is far from 0.
    """

    def init_net(self, net, index):
        super().init_net(net, index)
        fs = net.get_layer("stage1_block1_conv1").filter_skeleton
        fs.assign(np.zeros(fs.shape, "f4"))
        beta = net.get_layer("stage1_block1_bn2").beta
        beta.assign(np.full(beta.shape, 0.5, "f4"))


def _read_report(workdir):
    with open(os.path.join(workdir, "report.json")) as f:
        return json.load(f)


class SteerSrTest(tf.test.TestCase):
    def test_controller_rule(self):
        # Ramp: 0.7 * (e + 1) / (0.75 * 4), capped at the target.
        sr, desired = job_lib.steered_sr(1e-3, 0.4, 0.7, 1, 4)
        self.assertAllClose(desired, 0.7 * 2 / 3)
        self.assertAllClose(sr, 1e-3 * np.exp(5 * (0.7 * 2 / 3 - 0.4)))
        sr, desired = job_lib.steered_sr(1e-3, 0.75, 0.7, 3, 4)
        self.assertAllClose(desired, 0.7)
        self.assertAllClose(sr, 1e-3 * np.exp(-0.25))
        # One epoch moves sr by at most a factor 2 either way.
        self.assertAllClose(job_lib.steered_sr(1e-3, 0.0, 0.7, 0, 4)[0], 2e-3)
        self.assertAllClose(job_lib.steered_sr(1e-3, 0.9, 0.7, 3, 4)[0], 5e-4)
        # On the ramp: unchanged.
        self.assertAllClose(job_lib.steered_sr(1e-3, 0.35, 0.7, 2, 8)[0], 1e-3)

    def test_default_keeps_sr_a_constant(self):
        config = _config(sr=1e-3, threshold=0.01)
        job = base_job.Experiment(job_lib.Stripe(config), self.get_temp_dir())
        job.setup()
        job.load_data()
        job.build()
        self.assertIsNone(job.trainer.sr_variable)
        self.assertNotIn("stripe_sr", job.trainer.checkpoint_items())
        hooks = job.method.hooks(job, job.trainer)
        self.assertFalse(
            any(isinstance(h, job_lib.SrSteeringHook) for h in hooks)
        )

    @pytest.mark.large
    def test_steering_changes_sr_and_resumes_exactly(self):
        def config(max_steps=0):
            c = _config(
                sr=1e-3, threshold=0.01, target_flops_cut=0.5, steer_sr=True
            )
            return dataclasses.replace(
                c,
                run=dataclasses.replace(
                    c.run, epochs=3, max_steps=max_steps, strategy="default"
                ),
            )

        full_dir = self.create_tempdir().full_path
        full = base_job.Experiment(job_lib.Stripe(config()), full_dir)
        full.run()
        steer = _read_report(full_dir)["stripe"]["steer"]
        self.assertEqual(steer["gain"], job_lib.STEER_GAIN)
        rows = steer["epochs"]
        self.assertEqual([r["epoch"] for r in rows], [1, 2, 3])
        self.assertAllClose(rows[0]["sr"], 1e-3)
        for row, nxt in zip(rows, rows[1:]):
            self.assertAllClose(nxt["sr"], row["next_sr"])
        for i, row in enumerate(rows):
            want, desired = job_lib.steered_sr(
                row["sr"], row["cut"], 0.5, i, 3
            )
            self.assertAllClose(row["next_sr"], want)
            self.assertAllClose(row["desired"], desired)
        self.assertNotAllClose(rows[1]["sr"], rows[0]["sr"])
        # The cut at the training threshold is the compact model's.
        self.assertAllClose(
            rows[-1]["cut"],
            job_lib.training_cut(full.trainer.nets[0], 0.01),
        )
        self.assertAllClose(
            float(full.trainer.sr_variable.numpy()), rows[-1]["next_sr"]
        )
        # The selection-time threshold still runs.
        self.assertTrue(_read_report(full_dir)["stripe"]["target"])

        # Killed in epoch 2 (4 steps per epoch), after one steering step;
        # the stop mid-epoch steers nothing.
        split_dir = self.create_tempdir().full_path
        first = base_job.Experiment(
            job_lib.Stripe(config(max_steps=6)), split_dir
        )
        first.run()
        sr_at_kill = float(first.trainer.sr_variable.numpy())
        self.assertAllClose(sr_at_kill, rows[0]["next_sr"])
        resumed = base_job.Experiment(job_lib.Stripe(config()), split_dir)
        resumed.setup()
        resumed.load_data()
        resumed.build()
        items = dict(resumed.trainer.checkpoint_items())
        self.assertIn("stripe_sr", items)
        base_job.restore_items(
            tf.train.latest_checkpoint(os.path.join(split_dir, "checkpoints")),
            {"stripe_sr": items["stripe_sr"]},
        )
        self.assertEqual(float(items["stripe_sr"].numpy()), sr_at_kill)
        resumed = base_job.Experiment(job_lib.Stripe(config()), split_dir)
        resumed.run()
        split_rows = _read_report(split_dir)["stripe"]["steer"]["epochs"]
        self.assertEqual([r["epoch"] for r in split_rows], [1, 2, 3])
        self.assertEqual(split_rows[1]["sr"], sr_at_kill)
        self.assertAllClose(
            [r["sr"] for r in split_rows], [r["sr"] for r in rows]
        )


class StripeJobTest(tf.test.TestCase):
    @pytest.mark.large
    def test_train_prune_compact_export(self):
        workdir = self.get_temp_dir()
        report = _Seeded(_config(sr=1e-3, threshold=0.02)).run(
            workdir, strategy=_mirrored()
        )
        s = report["stripe"]
        self.assertTrue(s["pruned"])
        self.assertTrue(s["update_active"])
        self.assertEqual(s["selection"], "best_test")
        # The seeded zeros stayed dead; the others survived the small sr.
        self.assertBetween(s["kept_stripes"] / s["stripes"], 0.5, 0.75)
        pff = s["complexity"]["pff"]
        self.assertEqual(pff["before"]["params"], 19106)
        self.assertLess(pff["after"]["flops"], pff["before"]["flops"])
        self.assertGreater(pff["flops_reduction_pct"], 0.0)
        acc = s["accuracy"]
        self.assertEqual(acc["hard_masked_top1"], acc["compact_top1"])
        for name in ("stripes.png", "filters.png", "compact.keras"):
            self.assertTrue(os.path.exists(os.path.join(workdir, name)), name)
        with open(os.path.join(workdir, "report.json")) as f:
            self.assertEqual(json.load(f)["stripe"]["pruned"], True)
        # The export is the compact model and scores what the report says.
        loaded = tf.saved_model.load(os.path.join(workdir, "export"))
        source = data_lib.load_source(
            "synthetic",
            synthetic_train_size=128,
            synthetic_test_size=64,
            seed=1,
        )
        correct = 0
        for images, labels in data_lib.eval_dataset(source, batch_size=64):
            pred = np.argmax(loaded.serve(images).numpy(), axis=-1)
            correct += int(np.sum(pred == labels.numpy()))
        self.assertAllClose(correct / 64, acc["compact_top1"])
        masked = tf.saved_model.load(os.path.join(workdir, "export_masked"))
        self.assertIsNotNone(masked.serve)

    def test_calibrated_formulation_is_stored(self):
        # --formulation=calibrate times each compact layer on this machine
        # and stores the measured choice in the layer (so compact.keras and
        # the export keep it); the compact net still scores like the
        # hard-masked one.
        workdir = self.get_temp_dir()
        report = _Seeded(
            _config(
                sr=1e-3, threshold=0.02, formulation="calibrate",
                calibrate_batch=8,
            )
        ).run(workdir)
        s = report["stripe"]
        self.assertEqual(s["formulation"], "calibrate")
        acc = s["accuracy"]
        self.assertAllClose(acc["hard_masked_top1"], acc["compact_top1"])
        compact = keras.models.load_model(
            os.path.join(workdir, "compact.keras")
        )
        chosen = [
            layer.get_config()["formulation"]
            for layer in compact.layers
            if isinstance(layer, CompactStripeConv2D)
        ]
        self.assertNotEmpty(chosen)
        for formulation in chosen:
            self.assertIn(formulation, FORMULATIONS)
            self.assertNotIn(formulation, ("auto", "calibrate"))

    @pytest.mark.large
    def test_target_flops_cut(self):
        workdir = self.get_temp_dir()
        config = _config(
            sr=1e-3,
            threshold=0.02,
            target_flops_cut=0.5,
            extra_cuts=(0.3, 0.7),
        )
        config = dataclasses.replace(
            config, run=dataclasses.replace(config.run, epochs=1)
        )
        job_lib.Stripe(config).run(workdir)
        report = _read_report(workdir)
        s = report["stripe"]
        self.assertTrue(s["pruned"])
        target = s["target"]
        self.assertEqual(target["flops_cut"], 0.5)
        self.assertEqual(target["tolerance"], 0.02)
        self.assertEqual(target["convention"], "pff")
        self.assertTrue(target["within_tolerance"])
        self.assertLessEqual(abs(target["achieved_cut"] - 0.5), 0.02)
        # The chosen threshold pruned the export; training kept its own.
        self.assertEqual(s["prune_threshold"], target["threshold"])
        self.assertEqual(s["threshold"], 0.02)
        self.assertGreater(target["threshold"], 0.02)
        self.assertAllClose(
            s["complexity"]["pff"]["flops_reduction_pct"],
            100 * target["achieved_cut"],
        )
        compact = keras.models.load_model(
            os.path.join(workdir, "compact.keras")
        )
        flops = complexity.count(compact, "pff").flops
        before = s["complexity"]["pff"]["before"]["flops"]
        self.assertAllClose(1 - flops / before, target["achieved_cut"])
        # The same selected net pruned at the extra cut: more FLOPs
        # removed, within tolerance, and a row of its own in a study.
        lower, extra = s["extra_cuts"]
        # A cut below the selected one prunes the trained net, not the
        # export pruned at the selected threshold: fewer FLOPs removed.
        self.assertEqual(lower["flops_cut"], 0.3)
        self.assertLess(lower["achieved_cut"], target["achieved_cut"])
        self.assertLess(lower["threshold"], target["threshold"])
        self.assertGreater(lower["pff"]["flops"], flops)
        self.assertEqual(extra["flops_cut"], 0.7)
        self.assertTrue(extra["within_tolerance"])
        self.assertLessEqual(abs(extra["achieved_cut"] - 0.7), 0.02)
        self.assertGreater(extra["threshold"], target["threshold"])
        self.assertLess(extra["pff"]["flops"], flops)
        rows = study_figures.figures(report)
        self.assertEqual(rows["cut70"]["flops"], extra["pff"]["flops"])
        self.assertEqual(rows["cut70"]["final_top1"], extra["compact_top1"])
        self.assertEqual(rows[""]["flops"], flops)

    @pytest.mark.large
    def test_dead_branch_reports_both_forms(self):
        workdir = self.get_temp_dir()
        config = _config(sr=1e-3, threshold=0.02)
        config = dataclasses.replace(
            config, run=dataclasses.replace(config.run, epochs=1)
        )
        job = _DeadBranch(config)
        job.run(workdir)
        s = _read_report(workdir)["stripe"]
        self.assertIsNone(s["target"])
        self.assertEqual(s["prune_threshold"], 0.02)
        self.assertIn(
            ["stage1_block1_add", "stage1_block1_conv1"], s["removed_blocks"]
        )
        acc = s["accuracy"]
        both = acc["dead_branches"]
        self.assertEqual(set(both), {"constant", "shortcut"})
        # The default (constant) form is exact: it scores the masked net's
        # accuracy and is the exported model.
        self.assertEqual(both["constant"], acc["hard_masked_top1"])
        self.assertEqual(both["constant"], acc["compact_top1"])
        self.assertBetween(both["shortcut"], 0.0, 1.0)
        images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3))
        images = images.astype("f4")
        constant = job._compact(images)
        self.assertAllClose(
            constant, job._masked(images, training=False), atol=1e-4
        )
        shortcut = job._other_form(images)
        self.assertGreater(float(np.abs(shortcut - constant).max()), 1e-3)

    @pytest.mark.large
    def test_shape_only_trains_skeletons_only(self):
        workdir = self.get_temp_dir()
        config = _config(shape_only=True)
        job = base_job.Experiment(job_lib.Stripe(config), workdir)
        job.setup()
        job.load_data()
        trainer = job.build()
        net = trainer.nets[0]
        names = {v.path.split("/")[-1] for v in net.trainable_variables}
        self.assertEqual(names, {"filter_skeleton"})
        before = [w.numpy().copy() for w in net.weights]
        it = job.make_iterators(0)
        trainer.train_loop(it, 2)
        changed = [
            w.path
            for w, b in zip(net.weights, before)
            if np.abs(w.numpy() - b).max() > 0
        ]
        self.assertTrue(
            all("filter_skeleton" in p or "moving_" in p for p in changed),
            changed,
        )
        self.assertTrue(any("filter_skeleton" in p for p in changed))

    @pytest.mark.large
    def test_command_line_errors_are_one_line(self):
        proc = test_case.run_entry_point(
            "train.stripe",
            f"--workdir={self.get_temp_dir()}",
            "--threshold=-1",
            cwd=ROOT,
        )
        self.assertEqual(proc.returncode, 2)
        self.assertIn("error: --threshold=-1.0: must be >= 0", proc.stderr)
        self.assertNotIn("Traceback", proc.stderr)


if __name__ == "__main__":
    tf.test.main()
