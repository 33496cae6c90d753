"""Fault injection: kill the process at a named point, for crash tests.

The library calls `point(name)` at the moments a crash hurts most (after
an inner step loop, around a graft, between a checkpoint's files and its
index, before an atomic rename). When the environment variable
`TFGRAFT_KILL_AT` names that point, the process sends itself `SIGKILL`, the
same as `kill -9` from outside, at a precise and repeatable moment:

* `TFGRAFT_KILL_AT=graft.after` kills at the first pass of `graft.after`;
* `TFGRAFT_KILL_AT=loop.after_steps:3` kills at its third pass.

Without the variable a point costs one dict lookup.

Points placed in tfgraft: `loop.after_steps`, `graft.before`,
`graft.after`, `checkpoint.save` (checkpoint files written, index not yet
updated), `export.before_rename` (SavedModel written to its temporary
folder), `io.before_rename` (any atomic write, before its rename) and
`io.before_rename.<file name>` (the atomic write of that file only, e.g.
`io.before_rename.history.json`).

`TFGRAFT_WAIT_AT=<point>[:<n>]=<path>` pauses instead of killing, for
tests that need a run caught in the middle (a second run on its workdir,
Ctrl-C): at that pass the process creates `<path>.reached`, then waits
until `<path>` exists.
"""

import os
import signal
import time

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
