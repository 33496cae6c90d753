"""`train.study` end to end: a killed cell resumes, kill -9 takes its job.

The study's pieces (statistics, specs, summary, the runner's skip/resume of
cells) are tested in tests/study/study_test.py.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

_TINY = (
    "--dataset=synthetic --synthetic_train_size=64 --synthetic_test_size=32 "
    "--model=resnet20 --width_mult=0.25 --batch_size=32 --eval_batch_size=32 "
    "--epochs=2 --noprogress --strategy=default"
)


def _study_cmd(workdir, *extra):
    return [
        sys.executable,
        "-m",
        "train.study",
        f"--workdir={workdir}",
        "--seeds=0",
        f"--arm=a: baseline {_TINY} --learning_rate=0.05",
        f"--arm=b: baseline {_TINY} --learning_rate=0.01",
        "--compare=a - b",
        *extra,
    ]


def _env(**extra):
    env = dict(os.environ)
    env.pop("TFGRAFT_KILL_AT", None)
    env.update(extra)
    return env


def _procs_using(path):
    """PIDs whose command line mentions `path` (Linux /proc)."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
        except OSError:
            continue
        if path in cmd:
            pids.append(int(pid))
    return pids


@pytest.mark.large
class StudyCommandTest(tf.test.TestCase):
    def test_killed_cell_resumes_and_study_completes(self):
        workdir = self.create_tempdir().full_path
        # Every job of the first sitting is killed (-9) after its second
        # epoch's steps (checkpoint of epoch 1 saved): both cells fail, exit 1.
        first = subprocess.run(
            _study_cmd(workdir),
            cwd=ROOT,
            env=_env(TFGRAFT_KILL_AT="loop.after_steps:2"),
            capture_output=True,
            text=True,
        )
        self.assertEqual(first.returncode, 1, first.stderr[-2000:])
        self.assertIn("error: a:0: exit -9", first.stderr)
        cell = os.path.join(workdir, "a", "seed_0")
        self.assertTrue(os.path.isdir(os.path.join(cell, "checkpoints")))
        self.assertFalse(os.path.exists(os.path.join(cell, "report.json")))
        # The second sitting resumes both cells from their checkpoints.
        second = subprocess.run(
            _study_cmd(workdir),
            cwd=ROOT,
            env=_env(),
            capture_output=True,
            text=True,
        )
        self.assertEqual(second.returncode, 0, second.stderr[-2000:])
        self.assertIn("[1/2] a:0: resuming", second.stdout)
        with open(os.path.join(cell, "study_cell.json")) as f:
            sessions = json.load(f)["sessions"]
        self.assertEqual([s["returncode"] for s in sessions], [-9, 0])
        with open(os.path.join(cell, "study.log")) as f:
            self.assertIn("Restored", f.read())
        with open(os.path.join(workdir, "study.json")) as f:
            data = json.load(f)
        self.assertEqual([c["status"] for c in data["cells"]], ["done"] * 2)
        self.assertEqual(data["rows"][0]["n"], 1)
        self.assertEqual(
            data["rows"][0]["seconds"]["mean"],
            sum(s["seconds"] for s in sessions),
        )
        # A third sitting runs nothing and only rewrites the outputs.
        third = subprocess.run(
            _study_cmd(workdir, "--only=b:0"),
            cwd=ROOT,
            env=_env(),
            capture_output=True,
            text=True,
        )
        self.assertEqual(third.returncode, 0, third.stderr[-2000:])
        self.assertIn("1 of 1 cells already done", third.stdout)
        for name in ("study.md", "study.png"):
            self.assertTrue(os.path.exists(os.path.join(workdir, name)))

    def test_kill_9_of_the_study_takes_its_job_along(self):
        workdir = self.create_tempdir().full_path
        proc = subprocess.Popen(
            _study_cmd(workdir),
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        cell = os.path.join(workdir, "a", "seed_0")
        deadline = time.time() + 300
        while not _procs_using(f"--workdir={cell}") and time.time() < deadline:
            time.sleep(0.2)
        children = _procs_using(f"--workdir={cell}")
        children = [p for p in children if p != proc.pid]
        self.assertTrue(children, "the cell's job never started")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 30
        while _procs_using(f"--workdir={cell}") and time.time() < deadline:
            time.sleep(0.2)
        self.assertEqual(_procs_using(f"--workdir={cell}"), [])
