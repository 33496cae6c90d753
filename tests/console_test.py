"""The run's console: its lines, its live bar, and a real job's output."""

import io
import json
import os
import re
import subprocess
import sys
import threading

import pytest
import tensorflow as tf

from tfgraft.training import console as console_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _logs(losses, accs, top1=None, ensemble=None):
    logs = {
        "epoch": 3,
        "seconds": 12.4,
        "train_images_per_sec": 500.0,
        "train": [{"loss": x, "accuracy": a} for x, a in zip(losses, accs)],
    }
    if top1 is not None:
        logs["test"] = {"nets": [{"top1": t} for t in top1]}
        if ensemble is not None:
            logs["test"]["ensemble"] = {"top1": ensemble}
    return logs


class _Terminal(io.StringIO):
    def isatty(self):
        return True


class EpochLineTest(tf.test.TestCase):
    def test_one_net(self):
        line = console_lib.epoch_line(_logs([1.2345], [0.5], [0.612]), 10, 1)
        self.assertEqual(
            line,
            "epoch 3/10: train loss 1.234 acc 50.0% | test top1 61.2% | "
            "500 img/s | 12 s",
        )

    def test_two_nets_every_value_and_the_ensemble(self):
        line = console_lib.epoch_line(
            _logs([1.618, 1.592], [0.412, 0.42], [0.453, 0.448], 0.471),
            6,
            2,
            ["alpha 0.470/0.530", ""],
        )
        self.assertEqual(
            line,
            "epoch 3/6: train loss 1.618/1.592 acc 41.2/42.0% | test top1 "
            "45.3/44.8% ens 47.1% | 1000 img/s | alpha 0.470/0.530 | 12 s",
        )

    def test_more_nets_mean_and_range_in_train_every_net_in_test(self):
        line = console_lib.epoch_line(
            _logs([1.0, 2.0, 3.0], [0.1, 0.2, 0.6], [0.5, 0.6, 0.7], 0.8),
            6,
            3,
        )
        self.assertIn(
            "train loss 2.000 (1.000-3.000) acc 30.0% (10.0-60.0)", line
        )
        self.assertIn("test top1 50.0/60.0/70.0% ens 80.0%", line)
        self.assertIn("1500 img/s", line)

    def test_epoch_without_evaluation_has_no_test_part(self):
        line = console_lib.epoch_line(_logs([1.0], [0.5]), 6, 1)
        self.assertNotIn("test", line)

    def test_seconds(self):
        self.assertEqual(console_lib.fmt_seconds(75.4), "75 s")
        self.assertEqual(console_lib.fmt_seconds(754), "12m34s")
        self.assertEqual(console_lib.fmt_seconds(3725), "1h02m05s")


class ConsoleTest(tf.test.TestCase):
    def test_not_a_terminal_plain_lines_and_no_bar(self):
        out = io.StringIO()
        console = console_lib.Console(live=True, stream=out)
        self.assertFalse(console.live)
        with console.epoch(
            epoch=1, epochs=2, steps=4, num_nets=2, examples_per_step=8
        ) as progress:
            progress.finish(4, [1.0, 2.0], [0.5, 0.25])
        console.line("epoch 1/2: summary")
        for name in console.tasks("SavedModel", ["a", "b"]):
            pass
        text = out.getvalue()
        self.assertNotIn("\r", text)
        lines = text.splitlines()
        self.assertEqual(lines[0], "epoch 1/2: summary")
        self.assertRegex(lines[1], r"^SavedModel a: \d+\.\d s$")
        self.assertRegex(lines[2], r"^SavedModel b: \d+\.\d s$")

    def test_disabled_console_writes_nothing(self):
        out = _Terminal()
        console = console_lib.Console(enabled=False, stream=out)
        console.header(["job", "model"])
        console.line("x")
        self.assertEqual(list(console.tasks("SavedModel", ["a"])), ["a"])
        self.assertEqual(out.getvalue(), "")

    def test_live_bar_shows_the_polled_sums_and_stays(self):
        out = _Terminal()
        console = console_lib.Console(stream=out)
        self.assertTrue(console.live)
        polled = threading.Event()

        def read_progress():
            polled.set()
            # Two nets after 3 of 5 steps: loss sums, correct, examples.
            return [[3.0, 12.0, 24.0, 3.0], [6.0, 6.0, 24.0, 3.0]]

        with console.epoch(
            epoch=2,
            epochs=4,
            steps=5,
            num_nets=2,
            examples_per_step=8,
            read_progress=read_progress,
        ) as progress:
            # Bounded wait for the console's thread (nothing is timed).
            self.assertTrue(polled.wait(60))
            progress.finish(5, [0.9, 1.9], [0.55, 0.3])
        frames = out.getvalue().split("\r")
        polled_frames = [f for f in frames if "3/5" in f]
        self.assertNotEmpty(polled_frames)
        self.assertIn("loss 1.000/2.000 acc 50.0/25.0%", polled_frames[-1])
        final = [f for f in frames if f.strip()][-1]
        self.assertIn("epoch 2/4", final)
        self.assertIn("5/5", final)
        self.assertIn("loss 0.900/1.900 acc 55.0/30.0%", final)
        # leave=True: the last frame ends with a newline, not erased.
        self.assertTrue(out.getvalue().endswith("\n"))


# === A real job ===

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
            proc = subprocess.run(
                [sys.executable, "-m", "train.baseline", "--helpshort", *extra],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
            outputs[bool(extra)] = proc.stderr
        record = re.compile(r"^[IWEF]\d{4} ", re.M)
        self.assertRegex(outputs[True], record)
        self.assertNotRegex(outputs[False], record)


if __name__ == "__main__":
    tf.test.main()
