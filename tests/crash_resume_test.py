"""kill -9 at chosen points, rerun the same command, get the same weights.

One workdir is killed (SIGKILL, through `tfgraft.testing.faults`) mid-epoch,
after a graft, between a checkpoint's files and its index, before an atomic
rename and in the middle of the export; after each kill the same command is
run again. The final checkpoint must equal, bit for bit (`--deterministic`),
the one of an uninterrupted run, and no final path may ever hold a
half-written file.
"""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized

from tfgraft.testing import faults
from tfgraft.training import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# 3 epochs of 2 steps, one step per inner loop: 6 steps, checkpoints at
# steps 2, 4 and 6, grafts after epochs 1 and 2.
FLAGS = [
    "--model=resnet20",
    "--width_mult=0.25",
    "--num_nets=2",
    "--epochs=3",
    "--batch_size=16",
    "--synthetic_train_size=32",
    "--synthetic_test_size=16",
    "--eval_batch_size=16",
    "--steps_per_loop=1",
    "--strategy=default",
    "--deterministic",
    "--progress=false",
    "--learning_rate=0.05",
    "--eval_every=3",
]

# (kill point, the workdir's newest checkpoint and history.json's length
# afterwards).
KILLS = [
    # Mid-epoch 2, after step 3: resume from step 2.
    ("loop.after_steps:3", "ckpt-2", 1),
    # Right after the graft of epoch 2 (not yet saved).
    ("graft.after:1", "ckpt-2", 1),
    # ckpt-4's files are written but the index still names ckpt-2.
    ("checkpoint.save:1", "ckpt-2", 1),
    # history.json of epoch 2 is written after ckpt-4: killed before its
    # rename, the final path keeps epoch 1's complete history.
    ("io.before_rename.history.json:1", "ckpt-4", 1),
    # Training done (ckpt-6); export/net_0 written, net_1 killed midway.
    ("export.before_rename:2", "ckpt-6", 3),
]


def _command(workdir):
    return [sys.executable, "-m", "train.grafting", f"--workdir={workdir}"]


def _env(kill_at=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop(faults.ENV, None)
    if kill_at:
        env[faults.ENV] = kill_at
    return env


def _start(workdir, kill_at=None):
    return subprocess.Popen(
        _command(workdir) + FLAGS,
        cwd=ROOT,
        env=_env(kill_at),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc, killed):
    _, err = proc.communicate(timeout=300)
    if killed:
        assert proc.returncode == -signal.SIGKILL, (proc.returncode, err)
    else:
        assert proc.returncode == 0, err[-3000:]


def _trained_values(ckpt_path):
    """Every checkpointed tensor except bookkeeping (history has timings)."""
    reader = tf.train.load_checkpoint(ckpt_path)
    skip = ("history/", "save_counter/", "_CHECKPOINTABLE_OBJECT_GRAPH")
    return {
        name: reader.get_tensor(name)
        for name, _ in tf.train.list_variables(ckpt_path)
        if not name.startswith(skip)
    }


def _assert_no_half_written_files(test, workdir):
    """Final paths hold complete files; only `.tmp-*` may be partial."""
    for folder, dirs, files in os.walk(workdir):
        dirs[:] = [d for d in dirs if not d.startswith(".tmp-")]
        for name in files:
            if name.startswith(".tmp-") or not name.endswith(".json"):
                continue
            with open(os.path.join(folder, name)) as f:
                json.load(f)
    export = os.path.join(workdir, "export")
    if os.path.isdir(export):
        for name in os.listdir(export):
            if name.startswith(".tmp-"):
                continue
            path = os.path.join(export, name)
            test.assertTrue(
                os.path.exists(os.path.join(path, "saved_model.pb")), path
            )
            test.assertNotEmpty(os.listdir(os.path.join(path, "variables")))
    ckpt_dir = os.path.join(workdir, "checkpoints")
    state = tf.train.get_checkpoint_state(ckpt_dir)
    if state is not None:
        for path in state.all_model_checkpoint_paths:
            test.assertTrue(os.path.exists(path + ".index"), path)


@pytest.mark.large
class CrashResumeTest(tf.test.TestCase):
    def test_killed_runs_resume_to_the_uninterrupted_weights(self):
        full_dir = self.create_tempdir().full_path
        crash_dir = self.create_tempdir().full_path
        # The uninterrupted reference runs alongside the crash chain; it is
        # stopped in its export, after its last checkpoint is final.
        reference = _start(full_dir, "export.before_rename:1")
        for kill_at, newest, epochs_logged in KILLS:
            _finish(_start(crash_dir, kill_at), killed=True)
            _assert_no_half_written_files(self, crash_dir)
            self.assertEqual(
                tf.train.latest_checkpoint(
                    os.path.join(crash_dir, "checkpoints")
                ),
                os.path.join(crash_dir, "checkpoints", newest),
                kill_at,
            )
            with open(os.path.join(crash_dir, "history.json")) as f:
                self.assertLen(json.load(f), epochs_logged, kill_at)
        _finish(_start(crash_dir), killed=False)
        _finish(reference, killed=True)

        _assert_no_half_written_files(self, crash_dir)
        with open(os.path.join(crash_dir, "report.json")) as f:
            report = json.load(f)
        self.assertEqual(report["steps"], 6)
        self.assertEqual(report["epochs"], 3)
        self.assertCountEqual(
            os.listdir(os.path.join(crash_dir, "export")),
            ["net_0", "net_1", "best"],
        )

        final = os.path.join("checkpoints", "ckpt-6")
        expected = _trained_values(os.path.join(full_dir, final))
        got = _trained_values(os.path.join(crash_dir, final))
        self.assertCountEqual(got, expected)
        self.assertTrue(any("optimizer_1" in k for k in got))
        for name, value in expected.items():
            np.testing.assert_array_equal(got[name], value, err_msg=name)
        with open(os.path.join(full_dir, "history.json")) as f:
            full_history = json.load(f)
        with open(os.path.join(crash_dir, "history.json")) as f:
            crash_history = json.load(f)
        self.assertEqual(
            [h.get("test") for h in crash_history],
            [h.get("test") for h in full_history],
        )
        self.assertIn("test", crash_history[-1])


def _save_two(workdir):
    v = tf.Variable([1.0, 2.0])
    ckpt = tf.train.Checkpoint(v=v)
    manager = tf.train.CheckpointManager(ckpt, workdir, max_to_keep=3)
    manager.save(checkpoint_number=1)
    v.assign([3.0, 4.0])
    manager.save(checkpoint_number=2)
    v.assign([0.0, 0.0])
    return v, ckpt, manager


def _truncate(prefix):
    data = prefix + ".data-00000-of-00001"
    with open(data, "r+b") as f:
        f.truncate(2)


def _flip_bytes(prefix):
    data = prefix + ".data-00000-of-00001"
    with open(data, "r+b") as f:
        content = bytearray(f.read())
        content[:8] = bytes(255 - b for b in content[:8])
        f.seek(0)
        f.write(content)


class CorruptCheckpointTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("truncated", _truncate), ("flipped_bytes", _flip_bytes)
    )
    def test_bad_newest_falls_back_with_a_warning(self, corrupt):
        workdir = self.create_tempdir().full_path
        v, ckpt, manager = _save_two(workdir)
        corrupt(manager.latest_checkpoint)
        with self.assertLogs(level="WARNING") as logs:
            path = loop.restore(ckpt, manager)
        self.assertEqual(path, os.path.join(workdir, "ckpt-1"))
        self.assertAllClose(v, [1.0, 2.0])
        self.assertLen(logs.output, 1)
        self.assertIn(os.path.join(workdir, "ckpt-2"), logs.output[0])
        self.assertNotIn("\n", logs.output[0])

    def test_no_readable_checkpoint_is_one_line_naming_them(self):
        workdir = self.create_tempdir().full_path
        _, ckpt, manager = _save_two(workdir)
        for prefix in manager.checkpoints:
            _truncate(prefix)
        os.remove(os.path.join(workdir, "ckpt-1.index"))
        with self.assertRaises(loop.CheckpointError) as caught:
            loop.restore(ckpt, manager)
        message = str(caught.exception)
        self.assertNotIn("\n", message)
        for name in ("ckpt-1", "ckpt-2"):
            self.assertIn(os.path.join(workdir, name), message)


if __name__ == "__main__":
    tf.test.main()
