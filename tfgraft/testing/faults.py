"""Fault injection: kill the process at a named point, for crash tests.

`install()` registers this module's `point` with `tfgraft.points` (which
lists the points); the command-line entry points (`train/startup.py`) call
it, so a job run as `python -m train.<job>` obeys the variables below. When
`TFGRAFT_KILL_AT` names a point, the process sends itself `SIGKILL`, the
same as `kill -9` from outside, at a precise and repeatable moment:

* `TFGRAFT_KILL_AT=graft.after` kills at the first pass of `graft.after`;
* `TFGRAFT_KILL_AT=loop.after_steps:3` kills at its third pass.

`TFGRAFT_WAIT_AT=<point>[:<n>]=<path>` pauses instead of killing, for
tests that need a run caught in the middle (a second run on its workdir,
Ctrl-C): at that pass the process creates `<path>.reached`, then waits
until `<path>` exists.
"""

import os
import signal
import time

from tfgraft import points

ENV = "TFGRAFT_KILL_AT"
WAIT_ENV = "TFGRAFT_WAIT_AT"

_counts = {}


def _passes(env, name, target):
    # True at the <n>th pass of `name` when `target` is `name[:<n>]`.
    wanted, _, nth = target.partition(":")
    if wanted != name:
        return False
    _counts[env] = _counts.get(env, 0) + 1
    return _counts[env] == int(nth or 1)


def point(name):
    """Kills (`TFGRAFT_KILL_AT`) or pauses (`TFGRAFT_WAIT_AT`) at `name`."""
    target = os.environ.get(ENV)
    if target and _passes(ENV, name, target):
        os.kill(os.getpid(), signal.SIGKILL)
    wait = os.environ.get(WAIT_ENV)
    if wait:
        target, _, path = wait.rpartition("=")
        if _passes(WAIT_ENV, name, target):
            open(path + ".reached", "w").close()
            while not os.path.exists(path):
                time.sleep(0.05)


def install():
    """Registers `point` with `tfgraft.points` when `TFGRAFT_KILL_AT` or
    `TFGRAFT_WAIT_AT` is set; returns whether it did."""
    if not (os.environ.get(ENV) or os.environ.get(WAIT_ENV)):
        return False
    points.add(point)
    return True
