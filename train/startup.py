"""What `python -m train.<job>` does before and after TensorFlow loads.

TensorFlow's C++ runtime writes banners to stderr while it loads (oneDNN,
`Could not find cuda drivers`, twice, one per shared library) and
`failed call to cuInit` when it looks for GPUs on a machine without any.
TF 2.21 logs those through absl's C++ logging before
`absl::InitializeLog()` runs, where `TF_CPP_MIN_LOG_LEVEL` does not apply
yet, so no environment setting hides them. The entry points therefore:

* set `TF_CPP_MIN_LOG_LEVEL=2` (C++ INFO and WARNING hidden afterwards)
  unless the user set it;
* import TensorFlow and list its devices with file descriptor 2 pointed at
  a temporary file (`import_tensorflow`), then write back what it caught,
  less the lines below that level and the CPU-only `cuInit` error;
* after flag parsing (`configure_logging`), hide the INFO records of
  TensorFlow's and Keras's Python modules (SavedModel signature renames,
  `Sharding callback duration`, fingerprints) and drop the handler TF
  adds to its own logger, which printed each TF warning twice under absl.

`--tf_log` turns all of this off: everything TensorFlow prints is shown.
It is read from the command line and its flagfiles before TensorFlow
loads, since C++ logging cannot be changed afterwards. Only the command-
line entry points do this (`start`, from `train/__init__.py`, for the
`train.<job>` module being run); importing `train` or `tfgraft` from
other code changes nobody's logging.

With `TFGRAFT_KILL_AT` or `TFGRAFT_WAIT_AT` set, `start` also installs
the crash tests' fault injection (`install_faults`: `tfgraft.testing.faults`
watches the library's named points, `tfgraft/points.py`), `--tf_log` or
not.
"""

import logging
import os
import re
import sys
import tempfile

TF_LOG_FLAG = "tf_log"
_DEFAULT_CPP_LEVEL = "2"
# Entry points that never load TensorFlow.
_NO_TENSORFLOW = {"train.study"}

# One absl/glog C++ record: `I0000 00:00:1796.123   28609 port.cc:153] ...`.
_CPP_RECORD = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ \S+:\d+\]")
_CPP_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}
_PREINIT = "WARNING: All log messages before absl::InitializeLog()"
# A machine without GPUs says so through this error; the header shows
# the device the run uses instead.
_NO_GPU = "failed call to cuInit"

_state = {"tf_log": False}


def entry_module(orig_argv=None):
    """The module of `python -m <module>`, or None."""
    argv = sys.orig_argv if orig_argv is None else orig_argv
    for i, arg in enumerate(argv[1:], 1):
        if arg == "-m":
            return argv[i + 1] if i + 1 < len(argv) else None
        if arg.startswith("-m") and not arg.startswith("--"):
            return arg[2:]
        if not arg.startswith("-"):
            return None  # a script or `-c`'s code: not an entry point
    return None


def tf_log_requested(argv):
    """Whether `--tf_log` is on in `argv` or the flagfiles it names (the
    last setting wins, as in absl); unreadable flagfiles count as off
    (the flag parser reports them)."""
    from absl import flags

    try:
        args = flags.FlagValues().read_flags_from_files(argv, force_gnu=False)
    except Exception:  # noqa: BLE001 - reported later by the flag parser
        args = argv
    on = False
    for arg in args:
        name, _, value = arg.lstrip("-").partition("=")
        if not arg.startswith("-"):
            continue
        if name == TF_LOG_FLAG:
            on = value.lower() not in ("false", "0", "no") if value else True
        elif name == "no" + TF_LOG_FLAG:
            on = False
    return on


def entry_job(orig_argv=None, argv=None):
    """`(module, its flag arguments)` of the entry point being run, as
    `train.<job>`, or `(None, None)` when no entry point is.

    `python -m train.<job>` (a clone), `python -m tfgraft.train.<job>`
    (installed), `python -m train <job>` / `python -m tfgraft.train <job>`
    and the `tfgraft-train <job>` command all count.
    """
    argv = sys.argv if argv is None else argv
    module = entry_module(orig_argv)
    if module is None and os.path.basename(argv[0]) == "tfgraft-train":
        module = "train"
    module = (module or "").removeprefix("tfgraft.")
    if module == "train" and len(argv) > 1:
        return f"train.{argv[1]}", argv[2:]
    if module.startswith("train."):
        return module, argv[1:]
    return None, None


def start():
    """Runs for an entry point (`entry_job`) before TensorFlow loads."""
    module, args = entry_job()
    if module is None:
        return
    install_faults()
    if module in _NO_TENSORFLOW:
        return
    _state["tf_log"] = tf_log_requested(args)
    if _state["tf_log"]:
        return
    user_level = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", _DEFAULT_CPP_LEVEL)
    captured = import_tensorflow()
    # Anything that is not known noise goes out at once (a Python warning
    # of an import, say), before the run's own lines.
    sys.stderr.write(filter_startup(captured, user_level))
    sys.stderr.flush()


def install_faults():
    """The crash tests' fault injection (see above), where a job opts in:
    the library never imports `tfgraft.testing`. Returns whether it did."""
    from tfgraft.testing import faults

    return faults.install()


def import_tensorflow():
    """Imports TensorFlow and lists its devices with fd 2 caught; returns
    what was written there (written back unfiltered if the import fails)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        ok = False
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
            ok = True
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
            if not ok:
                sys.stderr.write(text)
                sys.stderr.flush()
    return text


def filter_startup(text, user_level=None):
    """`text` less TensorFlow's start-up noise (see the module docstring).

    C++ records below `user_level` (default 2: INFO and WARNING) go, with
    their continuation lines (every line up to the next record); so do
    absl's pre-init notice and, unless the user set a level, the `cuInit`
    error of a machine without GPUs.
    Everything else is kept in order.
    """
    level = int(user_level) if user_level else int(_DEFAULT_CPP_LEVEL)
    kept = []
    keep = True
    for line in text.splitlines(keepends=True):
        match = _CPP_RECORD.match(line)
        if match:
            keep = _CPP_SEVERITY[match.group(1)] >= level
            if keep and not user_level and _NO_GPU in line:
                keep = False
        elif line.startswith(_PREINIT):
            keep = False
            continue
        if keep:
            kept.append(line)
    return "".join(kept)


class _OwnRecordsBelowWarning(logging.Filter):
    """Passes warnings and errors, and lower records of tfgraft only."""

    def __init__(self, roots):
        super().__init__()
        self.roots = tuple(os.path.join(r, "") for r in roots)

    def filter(self, record):
        return record.levelno >= logging.WARNING or record.pathname.startswith(
            self.roots
        )


def configure_logging(tf_log):
    """After flag parsing: Python-side logging of the run (see above)."""
    if tf_log or _state["tf_log"]:
        return
    from absl import logging as absl_logging

    import tfgraft

    tf_logger = logging.getLogger("tensorflow")
    tf_logger.setLevel(logging.WARNING)
    # TF gives its logger a stderr handler when it loads before absl's
    # handler is installed; absl's root handler already prints those.
    for handler in list(tf_logger.handlers):
        if isinstance(handler, logging.StreamHandler):
            tf_logger.removeHandler(handler)
    roots = [
        os.path.dirname(os.path.abspath(tfgraft.__file__)),
        os.path.dirname(os.path.abspath(__file__)),
    ]
    handler = absl_logging.get_absl_handler()
    if not any(isinstance(f, _OwnRecordsBelowWarning) for f in handler.filters):
        handler.addFilter(_OwnRecordsBelowWarning(roots))
