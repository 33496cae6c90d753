"""absl entry points: `python -m train.<job> --flagfile=configs/<x>.cfg`."""

import logging as _logging
import os as _os

# Before TensorFlow loads: tfgraft's oneDNN defaults (tfgraft/__init__.py).
import tfgraft as _tfgraft  # noqa: F401

# Keep the console for tfgraft's own lines: C++ INFO logs and TF's Python
# INFO chatter (SavedModel signature renames, ...) are hidden.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_logging.getLogger("tensorflow").setLevel(_logging.WARNING)
