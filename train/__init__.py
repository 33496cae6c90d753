"""absl entry points: `python -m train.<job> --flagfile=configs/<x>.cfg`."""

import logging as _logging
import os as _os

# Keep the console for tfgraft's own lines: C++ INFO logs and TF's Python
# INFO chatter (SavedModel signature renames, ...) are hidden.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# oneDNN kernels on every x86 CPU, not only where TF enables them itself
# (see tfgraft/__init__.py).
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
if _os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1":
    _os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
_logging.getLogger("tensorflow").setLevel(_logging.WARNING)
