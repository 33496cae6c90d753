"""Logical CPU devices so tf.distribute can be tested without GPUs."""

import tensorflow as tf


def configure_logical_cpus(count=2):
    """Splits the first physical CPU into `count` logical devices.

    Must run before TensorFlow initialises its devices (before the first op).
    Returns the number of logical CPUs now visible; if TF was already
    initialised with another layout it leaves it alone and says how many
    there are, so callers can skip tests that need more.
    """
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0],
            [tf.config.LogicalDeviceConfiguration()] * count,
        )
    except RuntimeError:
        # Devices were initialised already; keep whatever is there.
        pass
    return len(tf.config.list_logical_devices("CPU"))


_MIRRORED = []


def mirrored_strategy():
    """One `MirroredStrategy` over two logical CPUs, shared per process.

    Several MirroredStrategy objects over the same devices in one process
    can clash on collective instance keys, so tests share this one.
    """
    if not _MIRRORED:
        configure_logical_cpus(2)
        _MIRRORED.append(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    return _MIRRORED[0]
