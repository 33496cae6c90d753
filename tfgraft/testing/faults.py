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
"""

import os
import signal

ENV = "TFGRAFT_KILL_AT"

_counts = {}


def point(name):
    """Kills this process with SIGKILL if `TFGRAFT_KILL_AT` names `name`."""
    target = os.environ.get(ENV)
    if not target:
        return
    wanted, _, nth = target.partition(":")
    if wanted != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
