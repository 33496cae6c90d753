"""Pytest set-up shared by every test: two logical CPUs, quiet TF logs."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# Test what users run: oneDNN on (train/__init__.py, tfgraft/__init__.py).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
if os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1":
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

from tfgraft.testing import devices  # noqa: E402

devices.configure_logical_cpus(2)

# tf.test.TestCase helpers (create_tempdir, get_temp_dir) read absl flags,
# which pytest never parses.
from absl import flags  # noqa: E402

if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
