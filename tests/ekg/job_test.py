"""End-to-end EKG: pretrain -> search -> bank -> extract -> fine-tune -> export.

Tiny sizes (ResNet-20 at width 0.25, 256 synthetic images) on one device;
marked large. Also the study's arms from one `train.baseline` workdir (the
search does not depend on `--knowledge`; `--search_knowledge` is part of
the search's settings) and the one-line errors of `train.ekg`.
"""

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tfgraft import config as cfg
from tfgraft import experiment as base_job
from tfgraft import models
from tfgraft.ekg import job as job_lib
from tfgraft.testing import test_case
from tfgraft.training import workdir as workdir_lib

_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _config(**ekg):
    return cfg.JobConfig(
        data=cfg.DataConfig(
            batch_size=64,
            eval_batch_size=64,
            synthetic_train_size=256,
            synthetic_test_size=64,
        ),
        model=cfg.ModelConfig("resnet20", width_mult=0.25),
        optim=cfg.OptimConfig(
            learning_rate=0.01,
            nesterov=True,
            schedule="multistep",
            milestones=(1.0,),
            gamma=0.2,
        ),
        run=cfg.RunConfig(epochs=1, progress=False, strategy="default"),
        ekg=cfg.EKGConfig(
            batch_size=64, train_per_class=8, val_per_class=6, **ekg
        ),
    )


@pytest.mark.large
class EKGJobTest(tf.test.TestCase):
    def test_chained_run_exports_a_smaller_equivalent_net(self):
        workdir = os.path.join(self.get_temp_dir(), "ekg")
        config = _config(pretrain_epochs=1, target_flops_rate=0.75)
        # One device: tracing under two logical CPUs doubles the run time;
        # KnowledgeTrainer's replica behaviour is tested in ekg_test.py.
        job = job_lib.EKG(config)
        report = job.run(workdir)
        e = report["ekg"]

        # Pretraining ran in the sub-workdir and was used.
        self.assertTrue(os.path.isfile(f"{workdir}/pretrain/report.json"))
        self.assertEqual(e["pretrained"], f"{workdir}/pretrain")
        # The search met the target at its last step, lowering FLOPs.
        rates = [h["flops_rate"] for h in e["history"]]
        self.assertLessEqual(rates[-1], 0.75)
        self.assertTrue(all(r > 0.75 for r in rates[:-1]))
        self.assertEqual(rates, sorted(rates, reverse=True))
        self.assertLen(set(rates), len(rates))
        self.assertLess(e["flops"]["ekg"]["after"], e["flops"]["ekg"]["before"])
        self.assertLess(
            e["params"]["macs"]["after"], e["params"]["macs"]["before"]
        )
        self.assertAllClose(
            e["flops_rate"],
            e["flops"]["ekg"]["after"] / e["flops"]["ekg"]["before"],
        )
        self.assertAllClose(e["flops_rate"], rates[-1])
        # Teachers: five, teacher 0 has the lowest val loss.
        self.assertLen(e["teachers"], 5)
        losses = [h["val_loss"] for h in e["history"][:-1]]
        self.assertEqual(e["teacher_losses"][0], min(losses))
        for key in ("pretrained", "searched", "finetuned_final"):
            self.assertBetween(e["accuracy"][key], 0.0, 1.0)
        self.assertEqual(
            e["accuracy"]["finetuned_final"], report["nets"][0]["final_top1"]
        )
        self.assertEqual(
            e["accuracy"]["finetuned_best"], report["nets"][0]["best_top1"]
        )
        # What a study reads: the switches and each phase's seconds.
        self.assertIs(e["knowledge"], True)
        self.assertIs(e["search_knowledge"], True)
        for key in ("search_seconds", "bank_seconds", "finetune_seconds"):
            self.assertGreater(e[key], 0.0, key)
        self.assertEqual(e["finetune_seconds"], report["train_seconds"])
        self.assertBetween(e["steps_not_lowest_loss"], 0, e["steps"])
        for h in e["history"]:
            self.assertAllClose(h["val_score"], h["val_loss"] + h["val_soft"])

        # The fine-tuned net is the compact one, and so is the export.
        net = job.experiment.trainer.nets[0]
        widths = e["channel_config"]
        self.assertEqual(net.get_layer("stem_conv").filters, widths["stage1"])
        self.assertEqual(
            net.get_layer("stage3_block1_conv1").filters,
            widths["stage3/block1/conv1"],
        )
        x = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3))
        x = x.astype("float32")
        exported = tf.saved_model.load(os.path.join(workdir, "export"))
        self.assertAllClose(
            exported.serve(x), net(x, training=False), atol=1e-4
        )
        for name in ("ekg_search.png", "search/result.json", "report.json"):
            self.assertTrue(os.path.isfile(os.path.join(workdir, name)), name)
        config_file = os.path.join(workdir, "search", "channel_config.json")
        self.assertEqual(models.ChannelConfig.load(config_file).widths, widths)

        # A rerun resumes: same search result, no new search, same net.
        again = job_lib.EKG(config)
        report2 = again.run(workdir)
        self.assertEqual(report2["ekg"]["history"], e["history"])
        self.assertAllClose(
            again.experiment.trainer.nets[0](x, training=False),
            net(x, training=False),
            atol=1e-6,
        )
        with open(os.path.join(workdir, "search", "result.json")) as f:
            self.assertEqual(json.load(f)["teachers"], e["teachers"])


@pytest.mark.large
class EKGStudyArmsTest(tf.test.TestCase):
    """Searches of the study's arms from one `train.baseline` workdir."""

    def _pretrain(self):
        self.root = self.get_temp_dir()
        config = _config()
        self.pretrained = os.path.join(self.root, "pretrain")
        base = cfg.JobConfig(
            data=config.data,
            model=dataclasses.replace(config.model, preset="ekg"),
            optim=cfg.OptimConfig(learning_rate=0.05, nesterov=True),
            run=config.run,
        )
        base_job.Method(base).run(self.pretrained)

    def _search(self, name, **ekg):
        config = _config(
            pretrained=self.pretrained, target_flops_rate=0.75, **ekg
        )
        job = job_lib.EKG(config)
        ex = base_job.Experiment(job, os.path.join(self.root, name))
        ex.setup()
        ex.load_data()
        job.search(ex)  # phases 1-4; no fine-tuning
        return job

    def _path(self, job):
        r = job.search_result
        steps = r["history"] + [r["final"]]
        return [
            {k: v for k, v in s.items() if k != "seconds"} for s in steps
        ], r["channel_config"]

    def test_search_is_the_same_with_and_without_knowledge(self):
        self._pretrain()
        on = self._search("knowledge", knowledge=True)
        off = self._search("noknowledge", knowledge=False)
        self.assertEqual(self._path(on), self._path(off))
        self.assertEqual(
            on.search_result["teachers"], off.search_result["teachers"]
        )
        self.assertAllEqual(on.bank.knowledge, off.bank.knowledge)

        ablation = self._search("nosearch", search_knowledge=False)
        r = ablation.search_result
        self.assertIs(r["settings"]["search_knowledge"], False)
        self.assertIs(on.search_result["settings"]["search_knowledge"], True)
        for s in r["history"][1:] + [r["final"]]:
            self.assertEqual(s["val_score"], s["val_loss"])
            self.assertEqual(s["gate"], s["lowest_loss_gate"])
        # The step-0 evaluation is common to both objectives.
        self.assertEqual(
            r["history"][0]["val_loss"],
            on.search_result["history"][0]["val_loss"],
        )
        # A workdir keeps the objective it was searched with (its records
        # refuse the run before the search result is even read).
        with self.assertRaisesRegex(
            workdir_lib.WorkdirMismatchError,
            "ekg.search_knowledge=False, this run has "
            "ekg.search_knowledge=True",
        ):
            self._search("nosearch", search_knowledge=True)


def _cli(*args):
    return test_case.run_entry_point("train.ekg", *args, cwd=_ROOT, timeout=120)


@pytest.mark.large
class EKGCommandLineTest(tf.test.TestCase):
    def test_target_rate_outside_unit_interval(self):
        out = _cli(
            f"--workdir={self.get_temp_dir()}/bad",
            "--pretrained=unused",
            "--target_flops_rate=1.5",
        )
        self.assertEqual(out.returncode, 2)
        self.assertEqual(
            test_case.error_lines(out.stderr),
            [
                "error: --target_flops_rate=1.5: must be in (0, 1) (the "
                "fraction of FLOPs kept)"
            ],
        )
        self.assertNotIn("Traceback", out.stderr)

    def test_mismatching_pretrained_checkpoint(self):
        net = models.build_model("resnet20", preset="ekg", width_mult=0.25)
        path = tf.train.Checkpoint(net_0=net).write(
            os.path.join(self.get_temp_dir(), "ckpt")
        )
        out = _cli(
            f"--workdir={self.get_temp_dir()}/mismatch",
            f"--pretrained={path}",
            "--model=resnet20",
            "--width_mult=0.5",
            "--synthetic_train_size=64",
            "--synthetic_test_size=16",
            "--batch_size=16",
            "--search_train_per_class=1",
            "--search_val_per_class=1",
            "--strategy=default",
        )
        self.assertEqual(out.returncode, 2, out.stderr[-2000:])
        lines = test_case.error_lines(out.stderr)
        self.assertLen(lines, 1)
        self.assertStartsWith(lines[0], f"error: --pretrained={path}: ")
        self.assertIn("does not match --model=resnet20", lines[0])
        self.assertNotIn("Traceback", out.stderr)


if __name__ == "__main__":
    tf.test.main()
