"""tf.distribute strategies, worker roles and precision policies.

Every worker of a multi-worker run trains and evaluates (the steps are
collective), but only the chief writes the workdir; the others save their
checkpoints into a `worker_scratch_dir` (README, "Training on several
machines").
"""

import json
import os
import shutil
import tempfile

import keras
import tensorflow as tf
from absl import logging

from tfgraft import cpu
from tfgraft import io
from tfgraft.config import ConfigError

# Keeps non-chief checkpoints in `<dir>/<task type>_<task index>` (for
# debugging, and for tests/e2e/multi_worker_test.py's weight comparison).
SCRATCH_ENV = "TFGRAFT_WORKER_SCRATCH"


def make_strategy(name="mirrored", devices=None):
    """Returns the `tf.distribute.Strategy` a `--strategy` value names.

    Args:
        name: `mirrored` (all local GPUs; with none, the default strategy
            on the CPU), `one_device`, `multi_worker` (from TF_CONFIG),
            `tpu` (the TPU named by `TPU_NAME`, `local` on a TPU VM) or
            `default` (no distribution at all).
        devices: explicit device list for `mirrored` (tests use two logical
            CPUs).

    Raises:
        ConfigError: TF_CONFIG missing or malformed, or no TPU reachable.
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
        _check_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        return _tpu_strategy()
    if name == "default":
        return tf.distribute.get_strategy()
    raise ConfigError(
        f"--strategy={name}: must be one of mirrored, one_device, "
        "multi_worker, tpu, default"
    )


def _check_tf_config():
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise ConfigError(
            "--strategy=multi_worker needs the TF_CONFIG environment "
            "variable (cluster and task of this worker)"
        )
    try:
        spec = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"TF_CONFIG is not valid JSON: {e}") from None
    cluster = spec.get("cluster") if isinstance(spec, dict) else None
    task = spec.get("task") if isinstance(spec, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ConfigError(
            "TF_CONFIG needs 'cluster' (job name -> list of host:port) and "
            "'task' ({'type': ..., 'index': ...})"
        )
    hosts = cluster.get(task.get("type"))
    index = task.get("index")
    if not isinstance(hosts, list) or not isinstance(index, int):
        raise ConfigError(
            f"TF_CONFIG task {task} is not in its cluster {sorted(cluster)}"
        )
    if not 0 <= index < len(hosts):
        raise ConfigError(
            f"TF_CONFIG task index {index} is out of range: cluster "
            f"'{task['type']}' has {len(hosts)} host(s)"
        )


def _tpu_strategy():
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        first = io.first_line(e)
        raise ConfigError(
            f"--strategy=tpu: no TPU reachable ({first}); set TPU_NAME to "
            "the TPU's name (TPU_NAME=local on a TPU VM)"
        ) from None
    return tf.distribute.TPUStrategy(resolver)


def _task(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return None, 0
    return resolver.task_type, int(resolver.task_id or 0)


def _worker_devices(strategy):
    """The strategy's worker devices; None for the default strategy (its
    ops go wherever TF places them)."""
    try:
        return list(strategy.extended.worker_devices)
    except RuntimeError:
        return None


def num_workers(strategy):
    """Worker processes taking part in `strategy`'s steps (1: one host)."""
    if _task(strategy)[0] is None:
        return 1
    cluster = strategy.cluster_resolver.cluster_spec().as_dict()
    return sum(len(cluster.get(job, ())) for job in ("chief", "worker"))


def describe(strategy):
    """Where the steps run, for the console header: `CPU`, `1 GPU (NVIDIA
    H100 80GB HBM3)`, `2 replicas on CPU:0, CPU:1`, `TPU, 8 cores`, with
    `2 workers: ` in front for multi-worker runs."""
    replicas = strategy.num_replicas_in_sync
    if isinstance(strategy, tf.distribute.TPUStrategy):
        text = f"TPU, {replicas} cores"
    else:
        devices = _worker_devices(strategy) or []
        specs = [tf.DeviceSpec.from_string(d) for d in devices]
        gpus = tf.config.list_physical_devices("GPU")
        if "GPU" in {s.device_type for s in specs} or (not devices and gpus):
            count = sum(1 for d in devices if "GPU" in d.upper()) or 1
            details = tf.config.experimental.get_device_details(gpus[0])
            name = details.get("device_name", "")
            text = f"{count} GPU{'s' if count > 1 else ''}"
            if name:
                text += f" ({name})"
        elif replicas > 1:
            text = f"{replicas} replicas on " + ", ".join(
                f"{s.device_type}:{s.device_index}" for s in specs
            )
        else:
            text = "CPU"
    workers = num_workers(strategy)
    if workers > 1:
        text = f"{workers} workers: {text}"
    return text


def is_chief(strategy):
    """True on the one worker that writes checkpoints, reports and exports.

    That is the `chief` task if the cluster has one, else `worker` 0 (and
    the only process of every single-host strategy).
    """
    task_type, task_id = _task(strategy)
    if task_type is None or task_type == "chief":
        return True
    has_chief = "chief" in strategy.cluster_resolver.cluster_spec().as_dict()
    return not has_chief and task_type == "worker" and task_id == 0


def worker_scratch_dir(strategy):
    """A private folder for a non-chief worker's writes; returns its path.

    A fresh temporary folder, or `$TFGRAFT_WORKER_SCRATCH/<type>_<index>`
    (kept by `remove_worker_scratch`) when that variable is set.
    """
    task_type, task_id = _task(strategy)
    root = os.environ.get(SCRATCH_ENV)
    if root:
        path = os.path.join(root, f"{task_type}_{task_id}")
        os.makedirs(path, exist_ok=True)
        return path
    return tempfile.mkdtemp(prefix=f"tfgraft-{task_type}{task_id}-")


def remove_worker_scratch(path):
    """Removes a `worker_scratch_dir` folder unless it is to be kept."""
    if not os.environ.get(SCRATCH_ENV):
        shutil.rmtree(path, ignore_errors=True)


def shard_by_data(dataset):
    """Makes every worker take its slice of each global batch.

    `experimental_distribute_dataset` would shard a file-based pipeline by
    *files* over the workers, so the union of their batches would no
    longer be the global batch the same seed gives on one host. Sharding
    by data keeps it exact (the pipelines are pure functions of (seed,
    step)): every worker computes the global batch and keeps its replicas'
    rows. One host: no effect.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return dataset.with_options(options)


def check_same_step(strategy, step, checkpoint_dir):
    """Raises unless every worker restored the same global step.

    Workers that resume from different checkpoints would run different
    numbers of collective steps and hang; this fails fast instead. One
    host: nothing to check.

    Raises:
        ConfigError: naming the steps and `checkpoint_dir`.
    """
    if num_workers(strategy) < 2:
        return
    value = tf.constant([step], tf.int64)
    steps = strategy.gather(strategy.run(lambda: value), axis=0)
    steps = sorted({int(s) for s in steps.numpy()})
    if len(steps) > 1:
        raise ConfigError(
            f"workers restored different steps {steps} from "
            f"{checkpoint_dir}: with --strategy=multi_worker every worker "
            "must see the chief's checkpoints to resume (put --workdir on a "
            "shared filesystem, or start a fresh workdir)"
        )


def sync_workers(strategy):
    """Waits until every worker got here (one tiny all-reduce).

    The chief writes its exports and report after training; the others
    wait for it so that no worker leaves the cluster early.
    """
    if num_workers(strategy) < 2:
        return
    one = strategy.run(lambda: tf.ones([]))
    strategy.reduce(tf.distribute.ReduceOp.SUM, one, axis=None).numpy()


def set_precision(precision):
    """Sets the global Keras dtype policy for `--precision`.

    Warns when `mixed_bfloat16` will run on a CPU without bfloat16
    instructions (AVX512-BF16 or AMX): oneDNN then emulates it, several
    times slower than float32 (see README, Performance).
    """
    keras.mixed_precision.set_global_policy(precision)
    if (
        precision == "mixed_bfloat16"
        and not tf.config.list_logical_devices("GPU")
        and not cpu_has_bfloat16()
    ):
        logging.warning(
            "--precision=mixed_bfloat16 on a CPU without bfloat16 "
            "instructions (avx512_bf16/amx_bf16): expect it to be slower "
            "than float32"
        )


def cpu_has_bfloat16(cpuinfo=cpu.CPUINFO):
    """Whether the CPU advertises native bfloat16 math (Linux only)."""
    return bool(cpu.flags(cpuinfo) & {"avx512_bf16", "amx_bf16"})


def resolve_jit(jit, strategy):
    """`--jit`: the flag when set, else on for GPU/TPU devices only.

    On CPUs oneDNN's convolutions are faster than XLA's (bench/throughput.py
    measures both), so XLA is off there unless asked for.
    """
    if jit is not None:
        return bool(jit)
    devices = _worker_devices(strategy)
    if devices is None:
        return bool(tf.config.list_logical_devices("GPU"))
    return any(("GPU" in d.upper()) or ("TPU" in d.upper()) for d in devices)
