"""Crash-safe writes: everything lands at a temporary path, then is renamed.

A crash (or `kill -9`) in the middle of a write leaves the final path either
absent or holding the previous complete version, never a half-written file.

JSON is strict: NaN and +-Infinity are not JSON numbers (Python's `json`
writes them as bare `NaN`/`Infinity`, which most readers reject), so every
JSON file tfgraft writes holds `null` where a value was not finite.
"""

import errno
import json
import math
import os
import shutil
import tempfile

import numpy as np

from tfgraft import points


class WriteError(RuntimeError):
    """A file or folder could not be written (disk full, read-only, ...).

    The message is one line naming the path; what was there before the
    write is left as it was, and no half-written file is left behind.
    """


_NO_SPACE = "no space left on device"


def first_line(error, default=None):
    """The first line of `str(error)`, stripped; where that is empty,
    `default`, or the error's type name if `default` is None."""
    text = str(error).strip()
    if text:
        return text.splitlines()[0]
    return type(error).__name__ if default is None else default


def os_error_line(path, error):
    """`<path>: <reason> (<detail>)`, one line, for a failed read/write.

    `error` is an `OSError` or a TensorFlow `OpError` (whose C++ file
    layer reports a full disk as `ResourceExhaustedError`).
    """
    detail = type(error).__name__
    if str(error).strip():
        detail += f": {first_line(error)}"
    if getattr(error, "errno", None) == errno.ENOSPC or (
        _NO_SPACE in str(error).lower()
    ):
        reason = _NO_SPACE
    elif isinstance(error, OSError) and error.strerror:
        reason = error.strerror[:1].lower() + error.strerror[1:]
    else:
        reason = "cannot write"
    return f"{path}: {reason} ({detail})"


def write_error(path, error):
    """The `WriteError` naming `path` for an `OSError`/`OpError`."""
    return WriteError(os_error_line(path, error))


def _before_rename(path):
    # Crash-test points: `io.before_rename` (any file) and
    # `io.before_rename.<basename>` (one file, e.g. `.history.json`).
    points.reach("io.before_rename")
    points.reach("io.before_rename." + os.path.basename(path))


def atomic_write_text(path, text):
    """`atomic_write_bytes` of `text` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def finite(obj):
    """`obj` with every non-finite float (NaN, +-inf) replaced by None.

    Walks dicts, lists and tuples (tuples become lists, as in JSON); other
    values are returned as they are. Written as JSON, None is `null` (see
    the module docstring).
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if isinstance(obj, np.generic):
        # NumPy scalars (np.float32 is no `float`): plain Python values.
        return finite(obj.item())
    return obj


def dumps_json(obj, **kwargs):
    """`json.dumps` of `finite(obj)` with `allow_nan=False` (strict JSON)."""
    return json.dumps(finite(obj), allow_nan=False, **kwargs)


def atomic_write_json(path, obj):
    """Writes `obj` as indented strict JSON (`dumps_json`) to `path`,
    atomically."""
    atomic_write_text(path, dumps_json(obj, indent=2, sort_keys=True) + "\n")


def atomic_write_bytes(path, data):
    """Writes raw bytes (a PNG, say) to `path` through a temp file in the
    same folder, then renames it; a failed write raises `WriteError`."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _before_rename(path)
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError):
            raise write_error(path, e) from None
        raise


class atomic_directory:
    """Context manager yielding a temp folder that becomes `path` on success.

    `path` must not exist unless `overwrite` is set; an existing folder is
    then swapped out only after the new one is complete.

    Example:

    >>> with atomic_directory("/tmp/x_export", overwrite=True) as tmp:
    ...     open(os.path.join(tmp, "a.txt"), "w").close()
    """

    def __init__(self, path, overwrite=False):
        self.path = os.path.abspath(path)
        self.overwrite = overwrite

    def __enter__(self):
        if os.path.exists(self.path) and not self.overwrite:
            raise FileExistsError(
                f"{self.path} exists; choose another path or remove it first"
            )
        parent = os.path.dirname(self.path)
        os.makedirs(parent, exist_ok=True)
        prefix = f".tmp-{os.path.basename(self.path)}-"
        # Leftovers of a write to the same path that was killed midway.
        for name in os.listdir(parent):
            if name.startswith(prefix):
                shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
        self.tmp = tempfile.mkdtemp(prefix=prefix, dir=parent)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        _before_rename(self.path)
        old = None
        if os.path.exists(self.path):
            old = self.tmp + ".old"
            os.replace(self.path, old)
        os.replace(self.tmp, self.path)
        if old:
            shutil.rmtree(old, ignore_errors=True)
        return False
