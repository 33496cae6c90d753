"""End-to-end EKG: pretrain -> search -> bank -> extract -> fine-tune -> export.

Tiny sizes (ResNet-20 at width 0.25, 256 synthetic images) on one device;
marked large. Also the one-line errors of `train.ekg`.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfgraft import config as cfg
from tfgraft import models
from tfgraft.ekg import job as job_lib

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
        job = job_lib.EKGJob(config, workdir)
        report = job.run()
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

        # The fine-tuned net is the compact one, and so is the export.
        net = job.trainer.nets[0]
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
        again = job_lib.EKGJob(config, workdir)
        report2 = again.run()
        self.assertEqual(report2["ekg"]["history"], e["history"])
        self.assertAllClose(
            again.trainer.nets[0](x, training=False),
            net(x, training=False),
            atol=1e-6,
        )
        with open(os.path.join(workdir, "search", "result.json")) as f:
            self.assertEqual(json.load(f)["teachers"], e["teachers"])


def _cli(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, "-m", "train.ekg", *args],
        cwd=_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error:")]


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
            _error_lines(out.stderr),
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
        lines = _error_lines(out.stderr)
        self.assertLen(lines, 1)
        self.assertStartsWith(lines[0], f"error: --pretrained={path}: ")
        self.assertIn("does not match --model=resnet20", lines[0])
        self.assertNotIn("Traceback", out.stderr)


if __name__ == "__main__":
    tf.test.main()
