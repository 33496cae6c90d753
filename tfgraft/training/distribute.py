"""tf.distribute strategies and precision policies chosen by name."""

import json
import os

import keras
import tensorflow as tf

from tfgraft.config import ConfigError


def make_strategy(name="mirrored", devices=None):
    """Returns the `tf.distribute.Strategy` a `--strategy` value names.

    Args:
        name: `mirrored` (all local GPUs; with none, the default strategy
            on the CPU), `one_device`,
            `multi_worker` (MultiWorkerMirroredStrategy from TF_CONFIG),
            `tpu` (TPUStrategy from the local or TF_CONFIG cluster) or
            `default` (no distribution at all).
        devices: explicit device list for `mirrored` (tests use two logical
            CPUs).
    """
    if name == "mirrored":
        if devices is None:
            devices = [d.name for d in tf.config.list_logical_devices("GPU")]
            if not devices:
                # One CPU has nothing to mirror, and a one-device
                # MirroredStrategy runs CPU steps about 3x slower than no
                # strategy at all: use the default strategy there.
                return tf.distribute.get_strategy()
        return tf.distribute.MirroredStrategy(devices)
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(
            gpus[0].name if gpus else "/cpu:0"
        )
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ConfigError(
                "--strategy=multi_worker needs the TF_CONFIG environment "
                "variable (cluster and task of this worker)"
            )
        try:
            json.loads(os.environ["TF_CONFIG"])
        except ValueError as e:
            raise ConfigError(f"TF_CONFIG is not valid JSON: {e}") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if name == "default":
        return tf.distribute.get_strategy()
    raise ConfigError(
        f"--strategy={name}: must be one of mirrored, one_device, "
        "multi_worker, tpu, default"
    )


def is_chief(strategy):
    """True on the one worker that writes checkpoints, reports and exports."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return (
        not has_chief
        and resolver.task_type == "worker"
        and (resolver.task_id == 0)
    )


def set_precision(precision):
    """Sets the global Keras dtype policy for `--precision`."""
    keras.mixed_precision.set_global_policy(precision)
