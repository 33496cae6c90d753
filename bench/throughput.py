"""Training throughput: the tfgraft loop vs plain `keras.Model.fit`.

Both train the same zoo model on the same in-memory batches with the same
batch size, PyTorch-style SGD and thread settings, side by side in one
process. Each is warmed up, then timed over several windows; the medians
and their ratio are printed (target: tfgraft / fit >= 1.0).

    python bench/throughput.py --model=resnet20 --batch_size=128
"""

import json
import statistics
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app
from absl import flags

from tfgraft import models
from tfgraft.training import optimizers
from tfgraft.training import trainer as trainer_lib

_MODEL = flags.DEFINE_string("model", "resnet20", "Zoo model.")
_WIDTH = flags.DEFINE_float("width_mult", 1.0, "Width multiplier.")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Batch size.")
_STEPS = flags.DEFINE_integer("steps", 10, "Steps per timed window.")
_WINDOWS = flags.DEFINE_integer("windows", 5, "Timed windows.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Warm-up steps.")
_JIT = flags.DEFINE_bool("jit", False, "XLA for the tfgraft step.")
_OUT = flags.DEFINE_string("json", None, "Write the results here.")


def _data(batch, steps):
    rng = np.random.default_rng(0)
    n = batch * 4
    images = rng.uniform(0, 255, (n, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, 10, n).astype("int32")
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    return ds.batch(batch, drop_remainder=True).cache().repeat()


def _net(seed):
    keras.utils.set_random_seed(seed)
    return models.build_model(_MODEL.value, width_mult=_WIDTH.value)


def _median_rate(run_window, batch):
    rates = []
    for _ in range(_WINDOWS.value):
        t0 = time.perf_counter()
        run_window()
        rates.append(_STEPS.value * batch / (time.perf_counter() - t0))
    return statistics.median(rates)


def bench_tfgraft(batch):
    strategy = tf.distribute.get_strategy()
    net = _net(0)
    opt = optimizers.TorchSGD(0.01, momentum=0.9, weight_decay=5e-4)
    trainer = trainer_lib.Trainer(
        [net], [opt], strategy, global_batch_size=batch, jit=_JIT.value
    )
    it = iter(_data(batch, _STEPS.value))
    trainer.train_loop([it], _WARMUP.value)
    return _median_rate(lambda: trainer.train_loop([it], _STEPS.value), batch)


def bench_fit(batch):
    net = _net(0)
    net.compile(
        optimizer=optimizers.TorchSGD(0.01, momentum=0.9, weight_decay=5e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=False,
    )
    ds = _data(batch, _STEPS.value)
    net.fit(ds, steps_per_epoch=_WARMUP.value, epochs=1, verbose=0)
    return _median_rate(
        lambda: net.fit(ds, steps_per_epoch=_STEPS.value, epochs=1, verbose=0),
        batch,
    )


def main(argv):
    del argv
    batch = _BATCH.value
    results = {
        "model": _MODEL.value,
        "batch_size": batch,
        "threads": {
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        },
    }
    # Interleave to spread machine noise over both.
    a = [bench_tfgraft(batch)]
    b = [bench_fit(batch)]
    results["tfgraft_img_per_sec"] = statistics.median(a)
    results["keras_fit_img_per_sec"] = statistics.median(b)
    results["ratio_tfgraft_over_fit"] = (
        results["tfgraft_img_per_sec"] / results["keras_fit_img_per_sec"]
    )
    print(
        f"{_MODEL.value} batch {batch}: tfgraft "
        f"{results['tfgraft_img_per_sec']:.0f} img/s, keras fit "
        f"{results['keras_fit_img_per_sec']:.0f} img/s, ratio "
        f"{results['ratio_tfgraft_over_fit']:.2f}"
    )
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    app.run(main)
