"""Runs a study's cells, each as its own job process, skipping done ones.

A cell is done when its workdir holds `report.json` (jobs write it last,
atomically). Any other cell is started with `python -m train.<job>`; a
cell that was interrupted resumes from its newest checkpoint, as every
job does when its command is run again. Each cell's console output is
appended to `<cell>/study.log`, and each session's wall time and exit
status to `<cell>/study_cell.json`.

The child process dies with the runner (Linux `PR_SET_PDEATHSIG`), so a
`kill -9` of the runner never leaves an orphaned job writing the cell;
Ctrl-C or SIGTERM stop the child first.
"""

import ctypes
import json
import os
import signal
import subprocess
import sys
import time

from tfgraft import io
from tfgraft.study.spec import StudyError

REPORT = "report.json"
CELL_RECORD = "study_cell.json"
CELL_LOG = "study.log"


def is_done(workdir):
    return os.path.isfile(os.path.join(workdir, REPORT))


def read_record(workdir):
    """The cell's session records (`[]` when the study never ran it)."""
    path = os.path.join(workdir, CELL_RECORD)
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return json.load(f)["sessions"]


def _die_with_parent():
    # Runs in the child between fork and exec.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: best effort
        pass


def _last_error(log_path):
    """The `error:` line of the log's last session, else its last line."""
    try:
        with open(log_path, errors="replace") as f:
            lines = [x.rstrip() for x in f.read().splitlines() if x.strip()]
    except OSError:
        return ""
    start = max(
        (i for i, x in enumerate(lines) if x.startswith("=== session")),
        default=0,
    )
    lines = lines[start:]
    errors = [x for x in lines if x.startswith("error:")]
    return (errors or lines or [""])[-1]


class Runner:
    """Runs cells of a study (see the module docstring).

    Args:
        study: the `spec.Study`.
        module: the child's module, `{job}` filled with the arm's job.
        echo: prints one progress line (default: stdout).
    """

    def __init__(self, study, *, module="train.{job}", echo=None):
        self.study = study
        self.module = module
        self.echo = echo or (lambda line: print(line, flush=True))

    def command(self, cell):
        """The child's command line (this interpreter runs the job)."""
        job = self.module.format(job=cell.arm.job)
        return [sys.executable, "-m", job, *cell.argv]

    def run_cell(self, cell):
        """Runs one cell to its end; returns the job's exit status."""
        for need in cell.needs:
            if not is_done(need):
                raise StudyError(
                    f"{cell.key}: needs {need} finished first (run its "
                    "arm for this seed, or the whole study)"
                )
        os.makedirs(cell.workdir, exist_ok=True)
        cmd = self.command(cell)
        sessions = read_record(cell.workdir)
        started = time.time()
        with open(os.path.join(cell.workdir, CELL_LOG), "a") as log:
            log.write(
                f"=== session {len(sessions) + 1} "
                f"{time.strftime('%Y-%m-%d %H:%M:%S')}: "
                f"{' '.join(cmd[1:])}\n"
            )
            log.flush()
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
            try:
                rc = proc.wait()
            except BaseException:  # Ctrl-C / SIGTERM: stop the child first
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                raise
            finally:
                sessions.append(
                    {
                        "started": time.strftime(
                            "%Y-%m-%dT%H:%M:%S", time.localtime(started)
                        ),
                        "seconds": time.time() - started,
                        "returncode": proc.returncode,
                    }
                )
                io.atomic_write_json(
                    os.path.join(cell.workdir, CELL_RECORD),
                    {"command": cmd[1:], "sessions": sessions},
                )
        return rc

    def run(self, cells):
        """Runs every cell not yet done, in order; returns the failures as
        `[(cell, message)]` (a failed cell's dependants are skipped)."""
        failures = []
        todo = [c for c in cells if not is_done(c.workdir)]
        done = len(cells) - len(todo)
        if done:
            self.echo(f"study: {done} of {len(cells)} cells already done")
        for k, cell in enumerate(todo, 1):
            failed = {c.workdir for c, _ in failures}
            blocked = [d for d in cell.needs if d in failed]
            if blocked:
                failures.append((cell, f"skipped: {blocked[0]} failed"))
                continue
            tag = f"[{k}/{len(todo)}] {cell.key}:"
            log = os.path.join(cell.workdir, CELL_LOG)
            resumed = os.path.isdir(os.path.join(cell.workdir, "checkpoints"))
            self.echo(
                f"{tag} {'resuming' if resumed else 'starting'} (log: {log})"
            )
            t0 = time.time()
            rc = self.run_cell(cell)
            if rc == 0 and is_done(cell.workdir):
                self.echo(f"{tag} done in {time.time() - t0:.0f} s")
                continue
            failures.append((cell, f"exit {rc}: {_last_error(log)}"))
            self.echo(f"{tag} failed (exit {rc})")
        return failures
