"""Cost of grafting: N nets in one process vs N separate nets, graft step.

For N = 2 and 4 (ResNet-20, CIFAR-size batches), in one process and with
interleaved timing windows:

* step-time ratio: one step of an N-net trainer / (N x one step of a
  one-net trainer) — target <= 1.05;
* graft-step fraction: median `graft_step()` time / one epoch of the N-net
  trainer (CIFAR-10 epoch: 50,000 / batch steps) — target < 1%.

    python bench/grafting_overhead.py [--nets=2,4] [--batch_size=128]
"""

import statistics
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app
from absl import flags

from tfgraft import io
from tfgraft import models
from tfgraft.grafting import grafter as grafter_lib
from tfgraft.training import optimizers
from tfgraft.training import trainer as trainer_lib

_NETS = flags.DEFINE_list("nets", ["2", "4"], "Numbers of nets.")
_MODEL = flags.DEFINE_string("model", "resnet20", "Zoo model.")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Batch size per net.")
_STEPS = flags.DEFINE_integer("steps", 5, "Steps per timed window.")
_WINDOWS = flags.DEFINE_integer("windows", 5, "Timed windows per variant.")
_GRAFTS = flags.DEFINE_integer("grafts", 5, "Timed graft steps.")
_EPOCH = flags.DEFINE_integer(
    "epoch_images", 50000, "Images per epoch for the graft fraction."
)
_CONCURRENT = flags.DEFINE_bool(
    "concurrent_nets", False, "Run the N nets of a step concurrently."
)
_OUT = flags.DEFINE_string("json", None, "Write results here.")


def _stream(batch, seed):
    rng = np.random.default_rng(seed)
    n = batch * 4
    images = rng.uniform(0, 255, (n, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, 10, n).astype("int32")
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    return iter(ds.batch(batch, drop_remainder=True).cache().repeat())


def _trainer(num_nets, batch, seed0):
    nets, opts = [], []
    for i in range(num_nets):
        keras.utils.set_random_seed(seed0 + i)
        nets.append(models.build_model(_MODEL.value))
        opts.append(optimizers.TorchSGD(0.01, momentum=0.9, weight_decay=5e-4))
    trainer = trainer_lib.Trainer(
        nets,
        opts,
        tf.distribute.get_strategy(),
        global_batch_size=batch,
        concurrent_nets=_CONCURRENT.value,
    )
    iterators = [_stream(batch, seed0 + i) for i in range(num_nets)]
    trainer.train_loop(iterators, 2)  # trace + warm up
    return trainer, iterators


def _window(trainer, iterators):
    t0 = time.perf_counter()
    trainer.train_loop(iterators, _STEPS.value)
    return (time.perf_counter() - t0) / _STEPS.value


def measure(num_nets, batch):
    multi, multi_it = _trainer(num_nets, batch, 100)
    singles = [_trainer(1, batch, 200 + i) for i in range(num_nets)]
    t_multi, t_single_sum = [], []
    for _ in range(_WINDOWS.value):
        t_multi.append(_window(multi, multi_it))
        t_single_sum.append(sum(_window(t, it) for t, it in singles))
    step_multi = statistics.median(t_multi)
    step_separate = statistics.median(t_single_sum)
    grafter = grafter_lib.Grafter(multi.nets)
    grafter.graft_step()  # trace
    graft = []
    for _ in range(_GRAFTS.value):
        t0 = time.perf_counter()
        grafter.graft_step().numpy()
        graft.append(time.perf_counter() - t0)
    graft_s = statistics.median(graft)
    epoch_s = step_multi * (_EPOCH.value // batch)
    return {
        "num_nets": num_nets,
        "step_seconds_n_nets_one_process": step_multi,
        "step_seconds_n_separate_nets": step_separate,
        "ratio_one_process_over_separate": step_multi / step_separate,
        "images_per_sec_one_process": num_nets * batch / step_multi,
        "graft_step_seconds": graft_s,
        "epoch_seconds": epoch_s,
        "graft_fraction_of_epoch": graft_s / epoch_s,
    }


def main(argv):
    del argv
    rows = [measure(int(n), _BATCH.value) for n in _NETS.value]
    print(
        f"{'nets':>4} | {'one process s/step':>18} | {'N separate s/step':>17}"
        f" | {'ratio':>5} | {'graft s':>7} | {'graft / epoch':>13}"
    )
    for r in rows:
        print(
            f"{r['num_nets']:>4}"
            f" | {r['step_seconds_n_nets_one_process']:>18.3f}"
            f" | {r['step_seconds_n_separate_nets']:>17.3f}"
            f" | {r['ratio_one_process_over_separate']:>5.2f}"
            f" | {r['graft_step_seconds']:>7.3f}"
            f" | {100 * r['graft_fraction_of_epoch']:>12.3f}%"
        )
    print("targets: ratio <= 1.05, graft / epoch < 1%")
    if _OUT.value:
        io.atomic_write_json(_OUT.value, rows)


if __name__ == "__main__":
    app.run(main)
