"""Training-pipeline throughput: decoded + augmented images per second.

Usage (from the repo root):

    python bench/pipeline_throughput.py [--batch_size=128] [--windows=5]

Measures `tfgraft.data.train_dataset` on the synthetic set and, if present,
on the cifar10-small image folder, with the default CIFAR recipe and with
MixUp/CutMix on. Prints the median of several timed windows after a
warm-up. Pin the core count with `taskset -c 0,1` to mimic a 2-core box.
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tfgraft.config import DataConfig  # noqa: E402
from tfgraft.data import load_source  # noqa: E402
from tfgraft.data import train_dataset  # noqa: E402

CIFAR10_SMALL = "/work/shared/data/cifar10-small"


def measure(source, batch_size, augment, windows, steps_per_window):
    iterator = iter(
        train_dataset(source, batch_size=batch_size, seed=0, augment=augment)
    )
    for _ in range(steps_per_window):  # warm-up: tracing, autotune
        next(iterator)
    rates = []
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(steps_per_window):
            images, _ = next(iterator)
        images.numpy()
        rates.append(
            steps_per_window * batch_size / (time.perf_counter() - start)
        )
    return statistics.median(rates), min(rates), max(rates)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--steps_per_window", type=int, default=50)
    args = parser.parse_args()

    specs = ["synthetic"]
    if os.path.isdir(CIFAR10_SMALL):
        specs.append(f"folder:{CIFAR10_SMALL}")
    configs = {
        "cifar": DataConfig(),
        "cifar+mix": DataConfig(mixup_alpha=0.2, cutmix_alpha=1.0),
    }
    print(f"cpus visible: {len(os.sched_getaffinity(0))}")
    print(f"{'dataset':<48} {'augment':<10} {'img/s (median)':>15} {'min':>9}")
    for spec in specs:
        source = load_source(spec)
        for name, config in configs.items():
            median, low, _ = measure(
                source,
                args.batch_size,
                config,
                args.windows,
                args.steps_per_window,
            )
            label = spec if len(spec) <= 48 else "..." + spec[-45:]
            print(f"{label:<48} {name:<10} {median:>15,.0f} {low:>9,.0f}")


if __name__ == "__main__":
    main()
