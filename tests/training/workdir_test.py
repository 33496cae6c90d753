"""Workdirs that defend themselves: the record compare, the lock, strict JSON.

The first classes call `tfgraft.training.workdir` and `tfgraft.io` directly
(no training); `WorkdirCommandTest` runs the real `train.baseline` command
on tiny synthetic runs: another --width_mult on a finished workdir, more
--epochs, two runs at once, a stale lock and Ctrl-C.
"""

import dataclasses
import json
import logging as py_logging
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from absl.testing import parameterized

from tfgraft import config as cfg
from tfgraft import io
from tfgraft.testing import faults
from tfgraft.testing import test_case
from tfgraft.training import workdir as workdir_lib
from train import flags as flags_lib

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RECORDS = ("config.json", "job.json", "flags.cfg")


def _config(**sections):
    base = dict(
        model=cfg.ModelConfig(width_mult=0.25),
        run=cfg.RunConfig(epochs=1),
    )
    base.update(sections)
    return cfg.JobConfig(**base).to_dict()


def _read_bytes(workdir, names=RECORDS):
    out = {}
    for name in names:
        with open(os.path.join(workdir, name), "rb") as f:
            out[name] = f.read()
    return out


def _strict_load(path):
    """json.load that fails on NaN/Infinity (what strict readers do)."""

    def reject(token):
        raise ValueError(f"{path}: non-standard JSON constant {token}")

    with open(path) as f:
        return json.load(f, parse_constant=reject)


def _dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _write_lock(workdir, pid, host=None):
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, workdir_lib.LOCK), "w") as f:
        json.dump(
            {
                "host": host or socket.gethostname(),
                "pid": pid,
                "since": "2026-01-01T00:00:00+0000",
                "argv": ["killed"],
            },
            f,
        )


class FieldKindTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ("epochs", "run.epochs", workdir_lib.HARMLESS),
        ("progress", "run.progress", workdir_lib.HARMLESS),
        ("keep_checkpoints", "run.keep_checkpoints", workdir_lib.HARMLESS),
        ("on_nan", "run.on_nan", workdir_lib.HARMLESS),
        ("jit", "run.jit", workdir_lib.HARMLESS),
        ("learning_rate", "optim.learning_rate", workdir_lib.RECIPE),
        ("seed", "run.seed", workdir_lib.RECIPE),
        ("batch_size", "data.batch_size", workdir_lib.RECIPE),
        ("graft_c", "graft.c", workdir_lib.RECIPE),
        ("unlisted_new_field", "run.some_future_knob", workdir_lib.RECIPE),
        ("width_mult", "model.width_mult", workdir_lib.INCOMPATIBLE),
        ("new_model_field", "model.depth", workdir_lib.INCOMPATIBLE),
        ("dataset", "data.dataset", workdir_lib.INCOMPATIBLE),
        ("precision", "run.precision", workdir_lib.INCOMPATIBLE),
        ("num_nets", "graft.num_nets", workdir_lib.INCOMPATIBLE),
        ("lwdna_ratio", "lwdna.ratio", workdir_lib.INCOMPATIBLE),
        ("ekg_teachers", "ekg.num_teachers", workdir_lib.INCOMPATIBLE),
        ("ekg_pretrained", "ekg.pretrained", workdir_lib.INCOMPATIBLE),
        ("l1_pretrained", "l1prune.pretrained", workdir_lib.INCOMPATIBLE),
        ("l1_target", "l1prune.target_flops_cut", workdir_lib.RECIPE),
        ("stripe_form", "stripe.formulation", workdir_lib.HARMLESS),
        ("job", "job", workdir_lib.INCOMPATIBLE),
    )
    def test_kind(self, field, kind):
        self.assertEqual(workdir_lib.field_kind(field), kind)

    def test_every_knob_declares_a_known_kind(self):
        kinds = {None, workdir_lib.HARMLESS, workdir_lib.INCOMPATIBLE}
        for section_type in cfg.section_types().values():
            if not dataclasses.is_dataclass(section_type):
                continue
            for field in dataclasses.fields(section_type):
                self.assertIn(cfg.spec(field).resume, kinds, field.name)

    @parameterized.named_parameters(
        (job, job) for job in sorted(flags_lib.JOB_GROUPS)
    )
    def test_every_field_names_a_flag_of_its_job(self, job):
        # Mismatch messages name flags; each field must map to a real one.
        fv = flags.FlagValues()
        flags_lib.define_job(job, flag_values=fv)
        fv(["prog", "--workdir=/x"])
        config = flags_lib.job_config(fv).to_dict()
        for section, fields in config.items():
            for key in fields or {}:
                flag = flags_lib.field_flag(f"{section}.{key}")
                self.assertIn(flag, fv, f"{section}.{key}")


class StartTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.workdir = self.create_tempdir().full_path

    def _start(self, config, job="baseline", **kwargs):
        return workdir_lib.start(
            self.workdir, config, job, flags_text="--epochs=1\n", **kwargs
        )

    def test_first_start_writes_the_records(self):
        # A study writes its own files into the cell first: ignored.
        for name in ("study.log", "study_cell.json"):
            with open(os.path.join(self.workdir, name), "w") as f:
                f.write("{}\n")
        self.assertEqual(self._start(_config()), [])
        with open(os.path.join(self.workdir, "config.json")) as f:
            self.assertEqual(json.load(f), json.loads(json.dumps(_config())))
        with open(os.path.join(self.workdir, "job.json")) as f:
            self.assertEqual(json.load(f), {"job": "baseline"})
        (entry,) = workdir_lib.read_invocations(self.workdir)
        self.assertEqual(entry["start"], "new")
        self.assertEqual(entry["pid"], os.getpid())
        self.assertEqual(entry["flags"], ["--epochs=1"])
        self.assertEqual(entry["changed"], {})

    def test_harmless_difference_is_appended_not_rewritten(self):
        self._start(_config())
        before = _read_bytes(self.workdir)
        more = _config(run=cfg.RunConfig(epochs=5, eval_every=2))
        diffs = self._start(more)
        self.assertEqual(
            {d.field for d in diffs}, {"run.epochs", "run.eval_every"}
        )
        self.assertEqual(_read_bytes(self.workdir), before)
        first, second = workdir_lib.read_invocations(self.workdir)
        self.assertEqual(second["start"], "resume")
        self.assertEqual(
            second["changed"]["run.epochs"], {"recorded": 1, "now": 5}
        )
        self.assertEqual(second["forced"], [])

    def test_incompatible_difference_stops_and_touches_nothing(self):
        self._start(_config())
        before = _read_bytes(self.workdir, RECORDS + ("invocations.json",))
        wider = _config(model=cfg.ModelConfig(width_mult=0.5))
        for force in (False, True):
            with self.assertRaises(workdir_lib.WorkdirMismatchError) as e:
                self._start(wider, force_resume=force)
            (diff,) = e.exception.differences
            self.assertEqual(
                (diff.field, diff.recorded, diff.current),
                ("model.width_mult", 0.25, 0.5),
            )
        after = _read_bytes(self.workdir, RECORDS + ("invocations.json",))
        self.assertEqual(after, before)

    def test_recipe_difference_needs_force_resume_which_is_recorded(self):
        self._start(_config())
        slower = _config(optim=cfg.OptimConfig(learning_rate=0.01))
        with self.assertRaisesRegex(
            workdir_lib.WorkdirMismatchError, "force_resume"
        ):
            self._start(slower)
        self._start(slower, force_resume=True)
        entry = workdir_lib.read_invocations(self.workdir)[-1]
        self.assertEqual(entry["forced"], ["optim.learning_rate"])
        with open(os.path.join(self.workdir, "config.json")) as f:
            self.assertEqual(json.load(f)["optim"]["learning_rate"], 0.1)

    def test_other_job_stops(self):
        graft = cfg.GraftConfig()
        self._start(_config(graft=graft), job="grafting")
        before = _read_bytes(self.workdir)
        with self.assertRaises(workdir_lib.WorkdirMismatchError) as e:
            self._start(_config(stripe=cfg.StripeConfig()), job="stripe")
        (diff,) = e.exception.differences
        self.assertEqual((diff.recorded, diff.current), ("grafting", "stripe"))
        self.assertEqual(_read_bytes(self.workdir), before)

    def test_messages_in_flag_names(self):
        self._start(_config(graft=cfg.GraftConfig(c=500.0)), job="grafting")
        cases = [
            (
                _config(graft=cfg.GraftConfig(c=50.0)),
                "grafting",
                "holds a run with --graft_c=500.0, this command has "
                "--graft_c=50.0; use a new --workdir (or --force_resume",
            ),
            (
                _config(
                    graft=cfg.GraftConfig(num_nets=3),
                    model=cfg.ModelConfig(width_mult=0.5, shortcut="A"),
                ),
                "grafting",
                "holds a run with --width_mult=0.25 no --shortcut "
                "--num_nets=2, this command has --width_mult=0.5 "
                "--shortcut=A --num_nets=3; use a new --workdir",
            ),
            (
                _config(stripe=cfg.StripeConfig()),
                "stripe",
                "holds a train.grafting run, this command is train.stripe",
            ),
        ]
        for config, job, message in cases:
            with self.assertRaises(workdir_lib.WorkdirMismatchError) as e:
                self._start(config, job=job)
            line = flags_lib.mismatch_message(e.exception)
            self.assertIn(f"--workdir={self.workdir} {message}", line)
            self.assertNotIn("\n", line)


_HOLDER = """
import sys
from tfgraft.training import workdir
lock = workdir.WorkdirLock(sys.argv[1]).acquire()
print("locked", flush=True)
sys.stdin.read()
lock.release()
"""


class WorkdirLockTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.workdir = self.create_tempdir().full_path
        self.path = os.path.join(self.workdir, workdir_lib.LOCK)

    def test_another_process_is_refused_naming_the_holder(self):
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, self.workdir],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            self.assertEqual(holder.stdout.readline().strip(), "locked")
            with self.assertRaises(workdir_lib.WorkdirBusyError) as e:
                workdir_lib.WorkdirLock(self.workdir).acquire()
            self.assertIn(
                f"--workdir={self.workdir} is in use by pid {holder.pid} on "
                f"host {socket.gethostname()} since ",
                str(e.exception),
            )
            self.assertIn("wait for it or use another", str(e.exception))
        finally:
            holder.communicate("", timeout=60)
        self.assertEqual(holder.returncode, 0)
        self.assertFalse(os.path.exists(self.path))
        lock = workdir_lib.WorkdirLock(self.workdir).acquire()
        lock.release()

    def test_stale_lock_is_taken_over_with_a_warning(self):
        pid = _dead_pid()
        _write_lock(self.workdir, pid)
        with self.assertLogs(level=py_logging.WARNING) as logs:
            lock = workdir_lib.WorkdirLock(self.workdir).acquire()
        self.assertIn(f"stale lock of pid {pid}", "\n".join(logs.output))
        with open(self.path) as f:
            self.assertEqual(json.load(f)["pid"], os.getpid())
        lock.release()
        self.assertFalse(os.path.exists(self.path))

    def test_same_process_reenters_until_the_last_release(self):
        first = workdir_lib.WorkdirLock(self.workdir).acquire()
        second = workdir_lib.WorkdirLock(self.workdir).acquire()
        first.release()
        self.assertTrue(os.path.exists(self.path))
        second.release()
        self.assertFalse(os.path.exists(self.path))


class StrictJsonTest(tf.test.TestCase, parameterized.TestCase):
    def test_non_finite_floats_are_written_as_null(self):
        path = os.path.join(self.create_tempdir().full_path, "x.json")
        io.atomic_write_json(
            path,
            {
                "loss": math.inf,
                "values": [1.0, math.nan, -math.inf, np.float32(np.nan)],
                "ok": np.float32(0.5),
                "pair": (2, np.int64(3)),
            },
        )
        self.assertEqual(
            _strict_load(path),
            {
                "loss": None,
                "values": [1.0, None, None, None],
                "ok": 0.5,
                "pair": [2, 3],
            },
        )

    def test_dumps_json_is_strict(self):
        self.assertEqual(io.dumps_json([math.nan]), "[null]")
        with self.assertRaises(ValueError):
            json.dumps([math.nan], allow_nan=False)

    @parameterized.named_parameters(
        ("graft_c", lambda: cfg.GraftConfig(c=math.inf), "--graft_c=inf"),
        ("graft_a", lambda: cfg.GraftConfig(a=math.nan), "--graft_a=nan"),
        ("width", lambda: cfg.ModelConfig(width_mult=math.inf), "width_mult"),
        ("lr", lambda: cfg.OptimConfig(learning_rate=math.nan), "--learning"),
        (
            "milestones",
            lambda: cfg.OptimConfig(milestones=(1.0, math.inf)),
            "--milestones=1.0,inf",
        ),
        ("kd", lambda: cfg.EKGConfig(temperature=math.inf), "--kd_temp"),
        ("sr", lambda: cfg.StripeConfig(sr=math.nan), "--sr=nan"),
        ("ratio", lambda: cfg.LWDNAConfig(ratio=math.nan), "--ratio=nan"),
    )
    def test_configs_reject_non_finite_floats(self, make, flag):
        with self.assertRaisesRegex(cfg.ConfigError, "must be a finite"):
            make()
        with self.assertRaisesRegex(cfg.ConfigError, flag):
            make()


# === Real commands ===

_TINY = [
    "--strategy=default",
    "--model=resnet20",
    "--width_mult=0.25",
    "--batch_size=8",
    "--eval_batch_size=8",
    "--synthetic_train_size=16",
    "--synthetic_test_size=8",
    "--steps_per_loop=1",
    "--progress=false",
]


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop(faults.ENV, None)
    env.pop(faults.WAIT_ENV, None)
    env.update(extra)
    return env


def _command(workdir, *extra):
    return [
        sys.executable,
        "-m",
        "train.baseline",
        f"--workdir={workdir}",
        *_TINY,
        *extra,
    ]


def _run(workdir, *extra):
    return subprocess.run(
        _command(workdir, *extra),
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _default_sigint():
    # A suite started in the background (`pytest ... &`) inherits an
    # ignored SIGINT, and Python keeps an ignored SIGINT ignored: the run
    # must get the default one for the Ctrl-C test to mean anything.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(workdir, wait_file, step, *extra):
    """Starts a run that pauses after step `step` until `wait_file`."""
    pause = f"loop.after_steps:{step}={wait_file}"
    return subprocess.Popen(
        _command(workdir, *extra),
        cwd=ROOT,
        env=_env(**{faults.WAIT_ENV: pause}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )


def _wait_until_paused(test, proc, wait_file):
    # Bounded only to fail rather than hang; nothing is timed.
    for _ in range(6000):
        if os.path.exists(wait_file + ".reached"):
            return
        if proc.poll() is not None:
            test.fail(f"run ended early:\n{proc.stderr.read()[-3000:]}")
        time.sleep(0.05)
    proc.kill()
    test.fail("run never reached its pause point")


@pytest.mark.large
class WorkdirCommandTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.root = tempfile.mkdtemp(prefix="workdir_test_")
        cls.finished = os.path.join(cls.root, "finished")
        cls.first = _run(cls.finished, "--epochs=1")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root, ignore_errors=True)
        super().tearDownClass()

    def _copy_of_finished(self):
        self.assertEqual(self.first.returncode, 0, self.first.stderr[-3000:])
        workdir = os.path.join(self.create_tempdir().full_path, "run")
        shutil.copytree(self.finished, workdir)
        return workdir

    def test_finished_run_is_strict_json_without_one_net_ensemble(self):
        workdir = self._copy_of_finished()
        for name in os.listdir(workdir):
            if name.endswith(".json"):
                _strict_load(os.path.join(workdir, name))
        history = _strict_load(os.path.join(workdir, "history.json"))
        self.assertNotIn("ensemble", history[-1]["test"])
        self.assertNotIn(
            "ensemble", _strict_load(os.path.join(workdir, "report.json"))
        )
        self.assertFalse(os.path.exists(os.path.join(workdir, "workdir.lock")))

    def test_other_width_mult_stops_and_leaves_the_records(self):
        workdir = self._copy_of_finished()
        before = _read_bytes(workdir, RECORDS + ("invocations.json",))
        proc = _run(workdir, "--epochs=1", "--width_mult=0.5")
        self.assertEqual(proc.returncode, 2, proc.stderr[-3000:])
        self.assertNotIn("Traceback", proc.stderr)
        self.assertEqual(
            test_case.error_lines(proc.stderr),
            [
                f"error: --workdir={workdir} holds a run with "
                "--width_mult=0.25, this command has --width_mult=0.5; use "
                "a new --workdir"
            ],
        )
        after = _read_bytes(workdir, RECORDS + ("invocations.json",))
        self.assertEqual(after, before)
        self.assertFalse(os.path.exists(os.path.join(workdir, "workdir.lock")))

    def test_more_epochs_resumes_and_is_recorded(self):
        workdir = self._copy_of_finished()
        before = _read_bytes(workdir)
        proc = _run(workdir, "--epochs=2")
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        self.assertEqual(_read_bytes(workdir), before)
        report = _strict_load(os.path.join(workdir, "report.json"))
        self.assertEqual(report["epochs"], 2)
        self.assertEqual(report["steps"], 4)
        first, second = workdir_lib.read_invocations(workdir)
        self.assertEqual((first["start"], second["start"]), ("new", "resume"))
        self.assertEqual(
            second["changed"], {"run.epochs": {"recorded": 1, "now": 2}}
        )
        self.assertIn("--epochs=2", second["flags"])
        self.assertIn("--epochs=2", second["argv"])

    def test_second_run_stops_at_once_while_the_first_finishes(self):
        workdir = os.path.join(self.create_tempdir().full_path, "run")
        wait_file = os.path.join(self.create_tempdir().full_path, "go")
        first = _start(workdir, wait_file, 1, "--epochs=1")
        try:
            _wait_until_paused(self, first, wait_file)
            second = _run(workdir, "--epochs=1")
        finally:
            open(wait_file, "w").close()
            _, err = first.communicate(timeout=300)
        self.assertEqual(second.returncode, 2, second.stderr[-3000:])
        (line,) = test_case.error_lines(second.stderr)
        self.assertRegex(
            line,
            rf"^error: --workdir={re.escape(workdir)} is in use by pid "
            rf"{first.pid} on host {re.escape(socket.gethostname())} since "
            r"\S+; wait for it or use another --workdir$",
        )
        self.assertEqual(first.returncode, 0, err[-3000:])
        (entry,) = workdir_lib.read_invocations(workdir)
        self.assertEqual(entry["pid"], first.pid)
        self.assertEqual(
            _strict_load(os.path.join(workdir, "report.json"))["steps"], 2
        )

    def test_stale_lock_of_a_killed_run_is_taken_over(self):
        workdir = os.path.join(self.create_tempdir().full_path, "run")
        pid = _dead_pid()
        _write_lock(workdir, pid)
        proc = _run(workdir, "--epochs=1")
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        self.assertIn(
            f"taking over the stale lock of pid {pid} on host "
            f"{socket.gethostname()}",
            proc.stderr,
        )
        self.assertFalse(os.path.exists(os.path.join(workdir, "workdir.lock")))

    def test_ctrl_c_exits_130_naming_the_last_checkpoint(self):
        workdir = os.path.join(self.create_tempdir().full_path, "run")
        wait_file = os.path.join(self.create_tempdir().full_path, "go")
        # Two steps per epoch: paused at step 3, after epoch 1's ckpt-2.
        proc = _start(workdir, wait_file, 3, "--epochs=2")
        try:
            _wait_until_paused(self, proc, wait_file)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=300)
        finally:
            open(wait_file, "w").close()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.assertEqual(proc.returncode, 130, err[-3000:])
        self.assertNotIn("Traceback", err)
        ckpt = os.path.join(workdir, "checkpoints", "ckpt-2")
        self.assertEqual(
            test_case.error_lines(err),
            [
                f"error: interrupted; last checkpoint: {ckpt}; run the same "
                "command again to resume"
            ],
        )
        self.assertFalse(os.path.exists(os.path.join(workdir, "workdir.lock")))


if __name__ == "__main__":
    tf.test.main()
