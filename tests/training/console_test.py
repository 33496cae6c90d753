"""The run's console: its lines and its live bar.

A real job's console output is checked in tests/e2e/console_test.py.
"""

import io
import threading

import tensorflow as tf

from tfgraft.training import console as console_lib


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


if __name__ == "__main__":
    tf.test.main()
