"""absl entry points: `python -m train.<job> --flagfile=configs/<x>.cfg`."""

# Before TensorFlow loads: tfgraft's oneDNN defaults (tfgraft/__init__.py).
import tfgraft as _tfgraft  # noqa: F401
from . import startup as _startup

# `python -m train.<job>` only: TensorFlow loads here, its start-up banners
# caught and filtered (train/startup.py; `--tf_log` shows them).
_startup.start()
