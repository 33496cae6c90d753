"""Pytest set-up shared by every test: two logical CPUs, quiet TF logs."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# Importing tfgraft (below, before TensorFlow) applies its oneDNN defaults,
# so the tests run what users run.

from tfgraft.testing import devices  # noqa: E402

devices.configure_logical_cpus(2)

# tf.test.TestCase helpers (create_tempdir, get_temp_dir) read absl flags,
# which pytest never parses.
from absl import flags  # noqa: E402

if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
