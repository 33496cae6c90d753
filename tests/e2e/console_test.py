"""A real job's console: `train.grafting` in a log file, `--tf_log`."""

import json
import os
import re
import subprocess
import sys

import pytest
import tensorflow as tf

from tfgraft.testing import test_case

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

_TINY = [
    "--dataset=synthetic",
    "--synthetic_train_size=64",
    "--synthetic_test_size=32",
    "--model=resnet20",
    "--width_mult=0.25",
    "--num_nets=2",
    "--batch_size=32",
    "--eval_batch_size=32",
    "--epochs=2",
    "--strategy=default",
]

_NOISE = (
    "oneDNN",
    "cuInit",
    "cuda drivers",
    "absl::InitializeLog",
    "unsupported characters",
    "Sharding callback",
    "fingerprint",
    "Config:",
    "train | step",
)


def _run_job(workdir, *extra):
    """Runs train.grafting with its output in a file (not a terminal)."""
    env = dict(os.environ)
    # The defaults are under test, not a level the caller may have set.
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    log_path = workdir + ".log"
    with open(log_path, "w") as log:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "train.grafting",
                f"--workdir={workdir}",
                *_TINY,
                *extra,
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=600,
        )
    with open(log_path, newline="") as f:
        return proc.returncode, f.read()


def _percents(text):
    return [float(x) for x in text.rstrip("%").split("/")]


@pytest.mark.large
class JobConsoleTest(tf.test.TestCase):
    def test_console_contract_of_a_grafting_run_in_a_log_file(self):
        workdir = os.path.join(self.create_tempdir().full_path, "run")
        rc, text = _run_job(workdir)
        self.assertEqual(rc, 0, text[-3000:])
        self.assertNotIn("\r", text)
        for noise in _NOISE:
            self.assertNotIn(noise, text)
        lines = [x for x in text.splitlines() if x.strip()]
        self.assertEqual(
            lines[0],
            "grafting | resnet20 x0.25, 2 nets | data synthetic: 64 train, "
            "32 test, 10 classes, 32x32x3 | 2 epochs x 2 steps, batch 32 | "
            f"CPU | workdir {workdir}",
        )
        epochs = [x for x in lines if re.match(r"epoch \d+/2: ", x)]
        self.assertLen(epochs, 2)
        with open(os.path.join(workdir, "history.json")) as f:
            history = json.load(f)
        for line, logs in zip(epochs, history):
            top1 = re.search(r"test top1 (\S+%) ens (\S+%)", line)
            self.assertAllClose(
                _percents(top1.group(1)),
                [100 * r["top1"] for r in logs["test"]["nets"]],
                atol=0.051,
            )
            self.assertAllClose(
                _percents(top1.group(2)),
                [100 * logs["test"]["ensemble"]["top1"]],
                atol=0.051,
            )
            loss = re.search(r"train loss (\S+) ", line).group(1)
            self.assertAllClose(
                [float(x) for x in loss.split("/")],
                [t["loss"] for t in logs["train"]],
                atol=0.00051,
            )
        alphas = history[0]["graft"]["mean_alpha"]
        self.assertIn(
            "| alpha " + "/".join(f"{a:.3f}" for a in alphas) + " |",
            epochs[0],
        )
        self.assertIn("| no graft (last epoch) |", epochs[1])
        # The last epoch's graft is skipped: no record, no repeated one.
        self.assertNotIn("graft", history[1])
        self.assertNotIn("net_0/graft_alpha", history[1].get("scalars", {}))
        exports = [x for x in lines if x.startswith("SavedModel ")]
        self.assertEqual(
            [x.split(":")[0] for x in exports],
            [
                "SavedModel export/net_0",
                "SavedModel export/net_1",
                "SavedModel export/best",
            ],
        )
        self.assertRegex(
            lines[-1],
            rf"^done in \d+ s; report: {re.escape(workdir)}/report\.json$",
        )
        self.assertTrue(os.path.exists(os.path.join(workdir, "report.json")))
        self.assertLen(lines, 1 + 2 + 3 + 1, text)

    def test_tf_log_shows_tensorflow_start_up_lines(self):
        env = dict(os.environ)
        env.pop("TF_CPP_MIN_LOG_LEVEL", None)
        outputs = {}
        for extra in ([], ["--tf_log"]):
            proc = test_case.run_entry_point(
                "train.baseline", "--helpshort", *extra, cwd=ROOT, env=env
            )
            self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
            outputs[bool(extra)] = proc.stderr
        record = re.compile(r"^[IWEF]\d{4} ", re.M)
        self.assertRegex(outputs[True], record)
        self.assertNotRegex(outputs[False], record)


if __name__ == "__main__":
    tf.test.main()
