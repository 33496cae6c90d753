"""End-to-end L1 pruning: pretrain -> prune -> fine-tune -> export, resume.

Tiny sizes (ResNet-20 at width 0.25, 128 synthetic images, a few steps)
on one device; marked large. Also the config and its one-line errors.
"""

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from absl.testing import parameterized

from tfgraft import complexity
from tfgraft import config as cfg
from tfgraft import models
from tfgraft import pretrained as pretrained_lib
from tfgraft.l1prune import job as job_lib
from tfgraft.testing import test_case
from train import flags as flags_lib

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _config(epochs=2, max_steps=0, **l1prune):
    return cfg.JobConfig(
        data=cfg.DataConfig(
            batch_size=32,
            eval_batch_size=64,
            synthetic_train_size=128,
            synthetic_test_size=64,
        ),
        model=cfg.ModelConfig(
            "resnet20", width_mult=0.25, preset="pff", shortcut="projection"
        ),
        optim=cfg.OptimConfig(
            learning_rate=0.01, weight_decay=1e-4, schedule="cosine"
        ),
        run=cfg.RunConfig(
            epochs=epochs,
            max_steps=max_steps,
            seed=1,
            progress=False,
            strategy="default",
        ),
        l1prune=cfg.L1PruneConfig(**l1prune),
    )


def _pff(net):
    c = complexity.count(net, "pff")
    return {"flops": int(c.flops), "params": int(c.params)}


def _images():
    x = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3))
    return x.astype("float32")


class L1PruneConfigTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("cut_one", dict(target_flops_cut=1.0), "--target_flops_cut=1.0"),
        ("cut_zero", dict(target_flops_cut=0.0), "--target_flops_cut=0.0"),
        ("tolerance", dict(target_tolerance=-0.1), "--target_tolerance=-0.1"),
        ("pretrain", dict(pretrain_epochs=-1), "--pretrain_epochs=-1"),
    )
    def test_bad_values(self, kwargs, message):
        with self.assertRaisesRegex(cfg.ConfigError, message):
            cfg.L1PruneConfig(**kwargs)

    def test_round_trip_and_job_needs_section(self):
        config = _config(target_flops_cut=0.6, prune_streams=False)
        back = cfg.JobConfig.from_dict(
            json.loads(json.dumps(config.to_dict()))
        )
        self.assertEqual(back.l1prune, config.l1prune)
        with self.assertRaisesRegex(ValueError, "config.l1prune"):
            job_lib.L1Prune(cfg.JobConfig())

    def test_paper_recipe(self):
        fv = flags.FlagValues()
        flags_lib.define_job("l1prune", flag_values=fv)
        cwd = os.getcwd()
        os.chdir(ROOT)
        try:
            fv(["prog", "--flagfile=configs/l1prune_cifar10_resnet56.cfg"])
        finally:
            os.chdir(cwd)
        c = flags_lib.job_config(fv)
        self.assertEqual(c.model.name, "resnet56")
        self.assertEqual((c.run.epochs, c.optim.learning_rate), (40, 0.01))
        self.assertEqual(c.optim.schedule, "constant")
        self.assertEqual(c.l1prune.target_flops_cut, 0.276)
        self.assertFalse(c.l1prune.prune_streams)


@pytest.mark.large
class L1PruneJobTest(tf.test.TestCase):
    def test_chained_run_resume_and_reuse(self):
        workdir = os.path.join(self.get_temp_dir(), "l1")
        config = _config(pretrain_epochs=1, target_flops_cut=0.5)
        # Stop after 2 of the 8 fine-tuning steps, as a kill would.
        first = job_lib.L1Prune(
            dataclasses.replace(
                config, run=dataclasses.replace(config.run, max_steps=2)
            )
        )
        first.run(workdir)
        trainer = first.experiment.trainer
        self.assertEqual(int(trainer.global_step.numpy()), 2)
        with open(os.path.join(workdir, "prune", "result.json")) as f:
            result = json.load(f)
        pruned_weights = [w.numpy() for w in first.pruned.weights]

        # The rerun reuses prune/ (never prunes again) and continues.
        job = job_lib.L1Prune(config)
        job._prune = None  # calling it would fail
        report = job.run(workdir)
        trainer = job.experiment.trainer
        self.assertEqual(int(trainer.global_step.numpy()), 8)
        with open(os.path.join(workdir, "history.json")) as f:
            self.assertEqual(json.load(f)[-1]["epoch"], 2)
        for a, b in zip(job.pruned.weights, pruned_weights):
            self.assertAllEqual(a, b)
        with open(os.path.join(workdir, "prune", "result.json")) as f:
            self.assertEqual(json.load(f), result)

        # The report: target met, costs in the PFF convention, accuracies.
        r = report["l1prune"]
        self.assertEqual(r["pretrained"], f"{workdir}/pretrain")
        self.assertLessEqual(abs(r["flops_cut"] - 0.5), 0.02)
        self.assertEqual(r["convention"], "pff")
        pff = r["complexity"]["pff"]
        net = trainer.nets[0]
        self.assertEqual(pff["after"], _pff(net))
        unpruned = models.build_model(
            "resnet20", width_mult=0.25, preset="pff", shortcut="projection"
        )
        self.assertEqual(pff["before"], _pff(unpruned))
        self.assertAllClose(
            r["flops_cut"],
            1 - pff["after"]["flops"] / pff["before"]["flops"],
        )
        self.assertAllClose(
            pff["flops_reduction_pct"], 100 * r["flops_cut"], atol=1e-9
        )
        self.assertLess(pff["after"]["params"], pff["before"]["params"])
        acc = r["accuracy"]
        for key in ("pretrained", "pruned"):
            self.assertBetween(acc[key]["top1"], 0.0, 1.0)
        self.assertEqual(
            acc["finetuned"]["final_top1"], report["nets"][0]["final_top1"]
        )
        self.assertEqual(
            acc["finetuned"]["best_top1"], report["nets"][0]["best_top1"]
        )
        self.assertLen(r["groups"], 12)
        self.assertEqual(
            {g["slot"]: g["kept"] for g in r["groups"]},
            {
                s: w
                for s, w in r["channel_config"].items()
                if s in {g["slot"] for g in r["groups"]}
            },
        )

        # channel_config.json is the fine-tuned net's, with its topology.
        saved = models.ChannelConfig.load(
            os.path.join(workdir, "channel_config.json")
        )
        self.assertEqual(saved.widths, r["channel_config"])
        self.assertEqual((saved.preset, saved.shortcut), ("pff", "projection"))
        self.assertEqual(
            net.get_layer("stage3_block0_conv2").filters,
            saved.widths["stage3"],
        )

        # export/ is the pruned net; train.export rebuilds it from the run.
        x = _images()
        exported = tf.saved_model.load(os.path.join(workdir, "export"))
        self.assertAllClose(
            exported.serve(x), net(x, training=False), atol=1e-4
        )
        out = os.path.join(self.get_temp_dir(), "again")
        job_lib.L1Prune(config).export_from_checkpoint(workdir, 0, out)
        again = tf.saved_model.load(out)  # kept alive: serve reads its vars
        self.assertAllClose(again.serve(x), net(x, training=False), atol=1e-4)

        # A train.baseline workdir as --pretrained: the same pretrained
        # net, a new target; another width is refused in one line.
        other = os.path.join(self.get_temp_dir(), "l1_from_baseline")
        config2 = _config(
            epochs=1,
            pretrained=f"{workdir}/pretrain",
            target_flops_cut=0.3,
            prune_streams=False,
        )
        report2 = job_lib.L1Prune(config2).run(other)
        r2 = report2["l1prune"]
        self.assertLessEqual(abs(r2["flops_cut"] - 0.3), 0.02)
        self.assertEqual({g["kind"] for g in r2["groups"]}, {"internal"})
        self.assertEqual(r2["accuracy"]["pretrained"], acc["pretrained"])
        wide = dataclasses.replace(
            config2,
            model=dataclasses.replace(config2.model, width_mult=0.5),
        )
        with self.assertRaisesRegex(
            pretrained_lib.PretrainedError, "--width_mult"
        ):
            job_lib.L1Prune(wide).run(
                os.path.join(self.get_temp_dir(), "wide")
            )


@pytest.mark.large
class L1PruneCommandLineTest(tf.test.TestCase):
    def test_unreachable_target_is_one_line(self):
        workdir = os.path.join(self.get_temp_dir(), "cli")
        proc = test_case.run_entry_point(
            "train.l1prune",
            f"--workdir={workdir}",
            "--model=resnet20",
            "--width_mult=0.25",
            "--preset=pff",
            "--synthetic_train_size=32",
            "--synthetic_test_size=16",
            "--batch_size=16",
            "--epochs=1",
            "--pretrain_epochs=1",
            "--target_flops_cut=0.999",
            "--strategy=default",
            "--progress=false",
            cwd=ROOT,
        )
        self.assertEqual(proc.returncode, 2, proc.stderr[-2000:])
        lines = test_case.error_lines(proc.stderr)
        self.assertLen(lines, 1)
        self.assertStartsWith(lines[0], "error: target_flops_cut=0.999: ")
        self.assertIn("at most", lines[0])
        self.assertNotIn("Traceback", proc.stderr)
        self.assertFalse(os.path.exists(os.path.join(workdir, "export")))


if __name__ == "__main__":
    tf.test.main()
