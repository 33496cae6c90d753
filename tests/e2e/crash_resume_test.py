"""kill -9 at chosen points, rerun the same command, get the same weights.

One workdir is killed (SIGKILL, through `tfgraft.testing.faults`) mid-epoch,
after a graft, between a checkpoint's files and its index, before an atomic
rename and in the middle of the export; after each kill the same command is
run again. The final checkpoint must equal, bit for bit (`--deterministic`),
the one of an uninterrupted run, and no final path may ever hold a
half-written file.

`MultiPhaseCrashTest` kills one tiny stripe, EKG (with pretraining) and
LW-DNA run each at a point drawn from a fixed seed (printed; set
`TFGRAFT_CRASH_SEED` to draw others), reruns it, and checks that it
finishes with a valid report and an export that `train.export` rebuilds
and `train.evaluate` serves. `DiskFullTest` fills a small tmpfs (root only):
one line naming the path, exit status 2, no half-written file.
"""

import json
import os
import random
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized

from tfgraft.testing import faults
from tfgraft.testing import test_case
from tfgraft.training import loop

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

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


# === kill -9 at a pseudo-random moment of the multi-phase jobs ===

_TINY = [
    "--model=resnet20",
    "--epochs=2",
    "--batch_size=16",
    "--synthetic_train_size=32",
    "--synthetic_test_size=16",
    "--eval_batch_size=16",
    "--steps_per_loop=1",
    "--strategy=default",
    "--progress=false",
]

# Per job: its extra flags, the folder of its export, and the kill points
# with the number of passes the tiny run surely makes (2 epochs of 2 steps
# per trained net; EKG also pretrains 1 epoch, LW-DNA searches first).
_JOB_RUNS = {
    "stripe": (
        ["--width_mult=0.25", "--target_flops_cut=0.3"],
        "export",
        {
            "loop.after_steps": 4,
            "checkpoint.save": 2,
            "io.before_rename": 6,
            "export.before_rename": 2,
        },
    ),
    "ekg": (
        [
            "--width_mult=0.25",
            "--pretrain_epochs=1",
            "--search_train_per_class=1",
            "--search_val_per_class=1",
            "--target_flops_rate=0.7",
        ],
        "export",
        {
            "loop.after_steps": 6,
            "checkpoint.save": 3,
            "io.before_rename": 8,
            "export.before_rename": 2,
        },
    ),
    "lwdna": (
        ["--width_mult=0.5", "--epochs_grad=1", "--search_batch_size=16"],
        "derived/export",
        {
            "loop.after_steps": 4,
            "checkpoint.save": 2,
            "io.before_rename": 6,
            "export.before_rename": 1,
        },
    ),
}

# The kill point of each job is drawn from this seed (and the job name);
# TFGRAFT_CRASH_SEED=<n> draws others.
_CRASH_SEED = int(os.environ.get("TFGRAFT_CRASH_SEED", "15"))


def _kill_point(job):
    rng = random.Random(f"{_CRASH_SEED}:{job}")
    points = _JOB_RUNS[job][2]
    name = rng.choice(sorted(points))
    return f"{name}:{rng.randint(1, points[name])}"


def _run(args, kill_at=None):
    return test_case.run_entry_point(*args, cwd=ROOT, env=_env(kill_at))


def _assert_consistent(test, workdir):
    """Every JSON parses; every export folder is a whole SavedModel (or
    holds whole ones); every listed checkpoint has its index."""
    for folder, dirs, files in os.walk(workdir):
        dirs[:] = [d for d in dirs if not d.startswith(".tmp-")]
        for name in files:
            if name.endswith(".json") and not name.startswith(".tmp-"):
                with open(os.path.join(folder, name)) as f:
                    json.load(f)
        for name in dirs:
            path = os.path.join(folder, name)
            if name.startswith("export"):
                models = [path]
                if not os.path.exists(os.path.join(path, "saved_model.pb")):
                    models = [os.path.join(path, d) for d in os.listdir(path)]
                for model in models:
                    test.assertTrue(
                        os.path.exists(os.path.join(model, "saved_model.pb")),
                        model,
                    )
            if name == "checkpoints":
                state = tf.train.get_checkpoint_state(path)
                for ckpt in state.all_model_checkpoint_paths if state else ():
                    test.assertTrue(os.path.exists(ckpt + ".index"), ckpt)


@pytest.mark.large
class MultiPhaseCrashTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(("stripe", "stripe"), ("ekg", "ekg"),
                                    ("lwdna", "lwdna"))
    def test_killed_at_a_random_point_resumes_to_a_usable_run(self, job):
        flags, export, _ = _JOB_RUNS[job]
        kill_at = _kill_point(job)
        print(f"{job}: TFGRAFT_KILL_AT={kill_at} (seed {_CRASH_SEED})")
        workdir = os.path.join(self.create_tempdir().full_path, job)
        command = [f"train.{job}", f"--workdir={workdir}", *_TINY, *flags]
        killed = _run(command, kill_at)
        self.assertEqual(
            killed.returncode, -signal.SIGKILL, (kill_at, killed.stderr[-3000:])
        )
        _assert_consistent(self, workdir)
        done = _run(command)
        self.assertEqual(done.returncode, 0, (kill_at, done.stderr[-3000:]))
        _assert_consistent(self, workdir)
        with open(os.path.join(workdir, "report.json")) as f:
            report = json.load(f)
        self.assertEqual(report["job"], job)
        self.assertEqual(report["epochs"], 2)

        # train.export rebuilds the run's own export from its checkpoint;
        # train.evaluate serves it.
        out = os.path.join(self.create_tempdir().full_path, "net")
        exported = _run(
            ["train.export", f"--workdir={workdir}", f"--export_dir={out}"]
        )
        self.assertEqual(exported.returncode, 0, exported.stderr[-3000:])
        x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3))
        x = x.astype("float32")
        own = tf.saved_model.load(os.path.join(workdir, export))
        again = tf.saved_model.load(out)
        self.assertAllClose(again.serve(x), own.serve(x), atol=1e-5)
        evaluated = _run(
            [
                "train.evaluate",
                f"--saved_model={out}",
                "--synthetic_train_size=32",
                "--synthetic_test_size=16",
            ]
        )
        self.assertEqual(evaluated.returncode, 0, evaluated.stderr[-3000:])
        with open(out + ".eval.json") as f:
            self.assertEqual(json.load(f)["count"], 16)

        if job == "lwdna":
            # A hand-edited derived config is named, not the checkpoint.
            path = os.path.join(workdir, "channel_config.json")
            with open(path) as f:
                config = json.load(f)
            config["widths"]["stage2"] += 1
            with open(path, "w") as f:
                json.dump(config, f)
            edited = _run(command)
            self.assertEqual(edited.returncode, 2, edited.stderr[-3000:])
            lines = test_case.error_lines(edited.stderr)
            self.assertLen(lines, 1, edited.stderr[-3000:])
            self.assertStartsWith(lines[0], f"error: {path}: edited")
            self.assertNotIn("Traceback", edited.stderr)


# === A full disk ===


def _mount_tmpfs(test, size):
    """A `size` tmpfs mounted for the test (root only), or skips."""
    if os.geteuid() != 0:
        test.skipTest("mounting a tmpfs needs root")
    point = test.create_tempdir().full_path
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", point],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        test.skipTest(f"cannot mount a tmpfs: {proc.stderr.strip()}")
    test.addCleanup(subprocess.run, ["umount", point], check=True)
    return point


@pytest.mark.large
class DiskFullTest(tf.test.TestCase, parameterized.TestCase):
    # 128k fills up at the first checkpoint, 400k in the export.
    @parameterized.named_parameters(("at_checkpoint", "128k", "checkpoints"),
                                    ("at_export", "400k", "export"))
    def test_full_disk_is_one_line_and_leaves_whole_files(self, size, where):
        disk = _mount_tmpfs(self, size)
        workdir = os.path.join(disk, "run")
        proc = _run(
            ["train.baseline", f"--workdir={workdir}", "--width_mult=0.25",
             *_TINY]
        )
        self.assertEqual(proc.returncode, 2, proc.stderr[-3000:])
        self.assertNotIn("Traceback", proc.stderr)
        lines = test_case.error_lines(proc.stderr)
        self.assertLen(lines, 1, proc.stderr[-3000:])
        self.assertRegex(
            lines[0],
            f"^error: {re.escape(workdir)}/{where}.*: no space left on "
            r"device \(",
        )
        # No temporary or half-written file is left, the rest is whole.
        for folder, dirs, files in os.walk(disk):
            for name in dirs + files:
                self.assertFalse(
                    name.startswith(".tmp-") or "_temp" in name, name
                )
        _assert_consistent(self, workdir)

    def test_export_to_a_full_disk(self):
        workdir = os.path.join(self.create_tempdir().full_path, "run")
        proc = _run(
            ["train.baseline", f"--workdir={workdir}", "--width_mult=0.25",
             "--max_steps=1", *_TINY]
        )
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        disk = _mount_tmpfs(self, "64k")
        out = os.path.join(disk, "net")
        proc = _run(
            ["train.export", f"--workdir={workdir}", f"--export_dir={out}"]
        )
        self.assertEqual(proc.returncode, 2, proc.stderr[-3000:])
        self.assertNotIn("Traceback", proc.stderr)
        lines = test_case.error_lines(proc.stderr)
        self.assertLen(lines, 1, proc.stderr[-3000:])
        self.assertStartsWith(
            lines[0], f"error: {out}: no space left on device ("
        )
        self.assertEmpty(os.listdir(disk))


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
