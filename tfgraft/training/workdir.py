"""Workdirs that defend themselves: one writer, one run.

A workdir's checkpoints only make sense with the configuration that made
them, which the first start records in `config.json` and `job.json`. So a
job, before it writes anything into its workdir:

1. takes `workdir.lock` (`WorkdirLock`): a second process on the same
   workdir stops at once, naming the holder; a lock left by a killed run
   is taken over with a warning;
2. compares its configuration with the recorded one (`compare`). Each
   field is one of three kinds (`field_kind`):
   * harmless: how the run runs, not what it trains (`run.epochs`,
     `run.eval_every`, `run.progress`...); allowed;
   * recipe: what the next steps do, not what the checkpoints hold
     (learning rate, augmentation, seed, grafting constants...); refused
     unless `force_resume` asks for it, which is recorded;
   * incompatible: what the checkpoints hold (job, model, dataset,
     precision, number of nets, the methods' search settings); refused;
3. writes `flags.cfg`, `config.json` and `job.json` when absent (so they
   keep describing the first start) and appends one entry to
   `invocations.json` (`start`): time, host, pid, argv, the resolved
   flags and the fields that differ from `config.json`.

Files the workdir holds besides these (e.g. a study's `study.log`) are
ignored.
"""

import dataclasses
import errno
import fcntl
import json
import os
import socket
import sys
import time

from absl import logging

from tfgraft import config
from tfgraft import io
from tfgraft.config import HARMLESS  # noqa: F401 (re-exported)
from tfgraft.config import INCOMPATIBLE
from tfgraft.config import RECIPE
from tfgraft.config import ConfigError

LOCK = "workdir.lock"
INVOCATIONS = "invocations.json"
CONFIG = "config.json"
JOB = "job.json"
FLAGS = "flags.cfg"


# === Kinds of configuration fields (declared with each knob) ===


def field_kind(field):
    """`HARMLESS`, `RECIPE` or `INCOMPATIBLE` for a dotted config field:
    what its knob declares (`tfgraft.config.resume_kind`)."""
    return config.resume_kind(field)


@dataclasses.dataclass(frozen=True)
class Difference:
    """One field whose value differs from the workdir's record.

    `field` is dotted (`model.width_mult`), `job` for the job type, or a
    section name (`graft`) when one side has the section and the other
    not. Values are as JSON holds them (None: unset, or not finite).
    """

    field: str
    recorded: object
    current: object

    @property
    def kind(self):
        return field_kind(self.field)


def compare(recorded, current):
    """Differences between two `JobConfig.to_dict()`-shaped dicts.

    Only fields both sides know are compared: a config recorded before a
    field existed (or after one was removed) is not a difference.
    """
    diffs = []
    for section in current:
        if section not in recorded:
            continue
        r, c = recorded[section], current[section]
        if isinstance(r, dict) and isinstance(c, dict):
            for key in c:
                if key in r and r[key] != c[key]:
                    diffs.append(Difference(f"{section}.{key}", r[key], c[key]))
        elif r != c:  # a section present on one side only
            diffs.append(Difference(section, r, c))
    return diffs


class WorkdirMismatchError(ConfigError):
    """The workdir holds another run: differences the job may not make.

    Attributes:
        workdir: the workdir.
        differences: the refused `Difference`s (for a job-type mismatch,
            only the `job` one).
        force_resume: whether the run asked to force recipe differences.

    The message names config fields; `train/flags.py` rewrites it with
    flag names.
    """

    def __init__(self, workdir, differences, force_resume):
        self.workdir = workdir
        self.differences = tuple(differences)
        self.force_resume = force_resume
        held = ", ".join(f"{d.field}={d.recorded!r}" for d in self.differences)
        now = ", ".join(f"{d.field}={d.current!r}" for d in self.differences)
        text = (
            f"workdir {workdir} holds a run with {held}, this run has "
            f"{now}; use a new workdir"
        )
        if all(d.kind == RECIPE for d in self.differences):
            text += " (or force_resume=True to continue it with these values)"
        super().__init__(text)


def read_json(path, hint=""):
    """A run's JSON record, None if absent; a damaged one is a one-line
    `ConfigError` naming it (`hint` appended)."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: unreadable ({e}){hint}") from None


def start(workdir, config, job, *, flags_text=None, force_resume=False):
    """Checks `config`/`job` against the workdir's record, then records
    (steps 2 and 3 above); call with the workdir locked, first of all.

    Args:
        workdir: the run folder (exists).
        config: the resolved config as a dict (`JobConfig.to_dict()`).
        job: the job type (`Job.name`).
        flags_text: the resolved flags as flagfile text, if any.
        force_resume: continue despite `RECIPE` differences (recorded).

    Returns:
        The `Difference`s from `config.json` this start goes on with.

    Raises:
        WorkdirMismatchError: a different job, an `INCOMPATIBLE`
            difference, or a `RECIPE` one without `force_resume`.
    """
    # Compared as JSON holds it (tuples as lists, non-finite as None).
    config = json.loads(io.dumps_json(config))
    config_path = os.path.join(workdir, CONFIG)
    job_path = os.path.join(workdir, JOB)
    hint = "; use a new --workdir"
    recorded = read_json(config_path, hint)
    recorded_job = read_json(job_path, hint)
    if recorded_job is not None and recorded_job.get("job") != job:
        # Another job's config differs everywhere; the job is the point.
        raise WorkdirMismatchError(
            workdir,
            [Difference("job", recorded_job.get("job"), job)],
            force_resume,
        )
    diffs = compare(recorded, config) if recorded is not None else []
    refused = [
        d
        for d in diffs
        if d.kind == INCOMPATIBLE or (d.kind == RECIPE and not force_resume)
    ]
    if refused:
        raise WorkdirMismatchError(workdir, refused, force_resume)
    forced = [d.field for d in diffs if d.kind == RECIPE]
    for d in diffs:
        logging.info(
            "%s: %s was %r, now %r", workdir, d.field, d.recorded, d.current
        )
    if forced:
        logging.warning(
            "--force_resume: continuing %s with changed %s (recorded in %s)",
            workdir,
            ", ".join(forced),
            INVOCATIONS,
        )
    if recorded is None:
        if flags_text is not None:
            io.atomic_write_text(os.path.join(workdir, FLAGS), flags_text)
        io.atomic_write_json(config_path, config)
    if recorded_job is None:
        io.atomic_write_json(job_path, {"job": job})
    entry = {
        "time": _now(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "argv": list(sys.argv),
        "job": job,
        "start": "new" if recorded is None else "resume",
        "changed": {
            d.field: {"recorded": d.recorded, "now": d.current} for d in diffs
        },
        "forced": forced,
        # The resolved flags, one per line (flags.cfg keeps the first's).
        "flags": _flag_lines(flags_text),
    }
    _append_invocation(workdir, entry)
    return diffs


def _flag_lines(flags_text):
    if flags_text is None:
        return None
    return [
        line
        for line in flags_text.splitlines()
        if line.strip() and not line.startswith("#")
    ]


def _append_invocation(workdir, entry):
    path = os.path.join(workdir, INVOCATIONS)
    try:
        entries = read_json(path) or []
    except ConfigError as e:
        # A log, not a record the run depends on: keep it aside, go on.
        aside = f"{path}.unreadable"
        os.replace(path, aside)
        logging.warning("%s; moved to %s", e, aside)
        entries = []
    entries.append(entry)
    io.atomic_write_json(path, entries)


def read_invocations(workdir):
    """The workdir's `invocations.json` entries (`[]` if none)."""
    return read_json(os.path.join(workdir, INVOCATIONS)) or []


def _now():
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# === The lock ===


class WorkdirBusyError(ConfigError):
    """Another process holds the workdir's lock; the message names it."""


# flock errors of file systems that have no flock (some NFS, Lustre).
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)

# Locks this process holds, by real path: [fd, holders]. A process that
# runs several jobs on one workdir one after the other (tests, notebooks)
# re-enters its own lock; the lock keeps other processes out.
_HELD = {}


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _describe(holder):
    return (
        f"pid {holder.get('pid')} on host {holder.get('host')} since "
        f"{holder.get('since')}"
    )


class WorkdirLock:
    """An advisory lock on a workdir: `<workdir>/workdir.lock`.

    The file holds the holder's host, pid, start time and argv, and is
    locked with `fcntl.flock` for as long as the run lasts; the kernel
    drops the lock when the process dies, however it dies. A lock file
    whose lock is free was left by a run that ended without `release`
    (`kill -9`, power loss): it is taken over with a warning. `release`
    removes the file. On a file system without `flock`, the file's pid is
    checked instead (alive on this host, or on another host: busy).

    Example:

    >>> lock = WorkdirLock("/tmp/run").acquire()
    >>> lock.release()
    """

    def __init__(self, workdir):
        self.workdir = os.path.abspath(workdir)
        self.path = os.path.join(self.workdir, LOCK)
        self._key = None

    def acquire(self):
        """Takes the lock; raises `WorkdirBusyError` if another has it."""
        if self._key is not None:
            return self
        key = os.path.realpath(self.path)
        if key in _HELD:
            _HELD[key][1] += 1
        else:
            _HELD[key] = [self._open_locked(), 1]
        self._key = key
        return self

    def release(self):
        """Drops the lock (and its file, once no holder here is left)."""
        if self._key is None:
            return
        key, self._key = self._key, None
        _HELD[key][1] -= 1
        if _HELD[key][1]:
            return
        fd = _HELD.pop(key)[0]
        # Unlink while still locked: a process that opened this file and
        # waits for it then sees it is no longer the lock file (inode
        # check in `_open_locked`).
        try:
            if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(fd)

    def _busy(self, holder):
        who = _describe(holder) if holder else "another process"
        return WorkdirBusyError(
            f"--workdir={self.workdir} is in use by {who}; wait for it or "
            "use another --workdir"
        )

    def _open_locked(self):
        for _ in range(100):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise self._busy(holder) from None
            except OSError as e:
                if e.errno not in _NO_FLOCK:
                    os.close(fd)
                    raise
                return self._take_without_flock(fd, e)
            try:
                current = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                self._take_over(fd, _read_holder(fd))
                return fd
            # Released (and unlinked) between our open and flock: retry.
            os.close(fd)
        raise self._busy(None)

    def _take_without_flock(self, fd, error):
        holder = _read_holder(fd)
        if holder and holder.get("pid") != os.getpid():
            same_host = holder.get("host") == socket.gethostname()
            if not same_host or _pid_alive(holder.get("pid", -1)):
                os.close(fd)
                raise self._busy(holder)
        logging.warning(
            "%s: no flock on this file system (%s); the lock only checks "
            "pids on this host",
            self.path,
            error.strerror,
        )
        self._take_over(fd, holder)
        return fd

    def _take_over(self, fd, holder):
        if holder and holder.get("pid") != os.getpid():
            if holder.get("host") != socket.gethostname():
                why = "its lock is free"
            elif _pid_alive(holder.get("pid", -1)):
                why = "that pid is alive but does not hold the lock"
            else:
                why = "that process is gone"
            logging.warning(
                "--workdir=%s: taking over the stale lock of %s (%s): that "
                "run ended without releasing it",
                self.workdir,
                _describe(holder),
                why,
            )
        record = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": _now(),
            "argv": list(sys.argv),
        }
        data = (io.dumps_json(record, indent=2) + "\n").encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)


def _read_holder(fd):
    """The lock file's holder record, or None (empty, being written)."""
    try:
        size = os.fstat(fd).st_size
        data = os.pread(fd, max(size, 1), 0)
        holder = json.loads(data.decode())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None
