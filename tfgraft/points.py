"""Named points in the runtime, and the callbacks that watch them.

The library calls `reach(name)` at the moments a crash hurts most: after
an inner step loop, around a graft, between a checkpoint's files and its
index, before an atomic rename. Nothing watches by default, so a point
costs a loop over an empty list. `add(callback)` makes every later
`reach` call `callback(name)`; `remove(callback)` stops it.

Crash tests inject their faults this way (`tfgraft.testing.faults`,
registered by the entry points); the runtime never imports
`tfgraft.testing`.

Points placed in tfgraft: `loop.after_steps`, `graft.before`,
`graft.after`, `checkpoint.save` (checkpoint files written, index not yet
updated), `export.before_rename` (SavedModel written to its temporary
folder), `io.before_rename` (any atomic write, before its rename) and
`io.before_rename.<file name>` (the atomic write of that file only, e.g.
`io.before_rename.history.json`).
"""

_callbacks = []


def reach(name):
    """Calls every registered callback with `name`, in registration order."""
    for callback in tuple(_callbacks):
        callback(name)


def add(callback):
    """Registers `callback(name)` for every later `reach` (once); returns it."""
    if not callable(callback):
        raise TypeError(f"points.add: callback={callback!r} is not callable")
    if callback not in _callbacks:
        _callbacks.append(callback)
    return callback


def remove(callback):
    """Unregisters `callback`; a callback never added is ignored."""
    if callback in _callbacks:
        _callbacks.remove(callback)
