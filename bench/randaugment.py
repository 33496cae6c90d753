"""RandAugment from keras-cv or from Keras 3: throughput and exact resume.

Usage (from the repo root):

    python bench/randaugment.py [--batch_size=128] [--windows=5]

tfgraft's stream is a pure function of (seed, step), so every random draw of
an augmentation must come from a seed derived from the step. Compares, on
CIFAR-sized batches (synthetic 32x32 images, after the crop and flip):

* `keras-cv`: `tfgraft.data.augment.RandAugmenter` (keras-cv's RandAugment,
  its generators reset per image from the step seed; what tfgraft uses).
* `keras3/image`: `keras.layers.RandAugment`, its `SeedGenerator`s reset
  per image from the step seed, images one at a time (each image draws its
  own operations, as in the paper and keras-cv).
* `keras3/batch`: the same layer on whole batches, reset per batch (Keras 3
  draws one pair of operations for the whole batch).

For each it prints images per second of the augmentation alone (median of
timed windows after a warm-up) and whether resuming is exact: the batch of
step k, computed by a fresh layer after other steps, equals the batch an
uninterrupted run computed at step k, bit for bit.
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfgraft.data import augment  # noqa: E402
from tfgraft.data import synthetic  # noqa: E402


class Keras3RandAugmenter:
    """`keras.layers.RandAugment` with every `SeedGenerator` reset per call.

    `get_random_transformation(seed=...)` of the Keras 3 layers accepts only
    an int or a `SeedGenerator` (and RandAugment ignores it), so the only
    stateless route is the one `augment.RandAugmenter` takes for keras-cv:
    reset each generator's state from the step seed before every call.
    """

    def __init__(self, magnitude, layers, per_image):
        self.layer = keras.layers.RandAugment(
            value_range=(0, 255), num_ops=layers, factor=magnitude, seed=0
        )
        self.per_image = per_image
        self._generators = [
            layer.generator
            for layer in self.layer._flatten_layers()
            if isinstance(
                getattr(layer, "generator", None), keras.random.SeedGenerator
            )
        ]

    def _reset(self, key):
        for number, generator in enumerate(self._generators):
            state = generator.state
            generator.state.assign(
                tf.random.stateless_uniform(
                    state.shape,
                    tf.random.experimental.stateless_fold_in(key, number),
                    minval=None,
                    maxval=None,
                    dtype=state.dtype,
                )
            )

    def __call__(self, images, seed):
        if not self.per_image:
            self._reset(seed)
            return self.layer(images, training=True)

        def augment_one(args):
            image, index = args
            self._reset(tf.random.experimental.stateless_fold_in(seed, index))
            return self.layer(image, training=True)

        indices = tf.range(tf.shape(images, out_type=tf.int64)[0])
        return tf.map_fn(
            augment_one,
            (images, indices),
            fn_output_signature=tf.float32,
            parallel_iterations=1,
        )


def make(name, magnitude, layers):
    if name == "keras-cv":
        return augment.RandAugmenter(magnitude, layers)
    return Keras3RandAugmenter(magnitude, layers, name == "keras3/image")


def stream(name, images, steps, start, args):
    """Batches `start .. steps-1` of one augmenter, as a tf.data map."""
    augmenter = make(name, args.magnitude, args.layers)
    batches = tf.data.Dataset.range(start, steps).map(
        lambda step: (
            step,
            tf.gather(
                images,
                tf.math.floormod(
                    tf.range(args.batch_size, dtype=tf.int64)
                    + step * args.batch_size,
                    len(images),
                ),
            ),
        )
    )
    return batches.map(
        lambda step, x: augmenter(
            tf.cast(x, tf.float32),
            tf.random.experimental.stateless_fold_in(
                tf.constant([7, 0], tf.int64), step
            ),
        ),
        num_parallel_calls=None,
    )


def measure(name, images, args):
    steps = args.windows * args.steps_per_window + args.steps_per_window
    iterator = iter(stream(name, images, steps, 0, args))
    for _ in range(args.steps_per_window):  # warm-up: tracing
        next(iterator)
    rates = []
    for _ in range(args.windows):
        start = time.perf_counter()
        for _ in range(args.steps_per_window):
            out = next(iterator)
        out.numpy()
        rates.append(
            args.steps_per_window
            * args.batch_size
            / (time.perf_counter() - start)
        )
    return rates


def resume_is_exact(name, images, args):
    full = [b.numpy() for b in stream(name, images, 4, 0, args)]
    resumed = [b.numpy() for b in stream(name, images, 4, 2, args)]
    again = [b.numpy() for b in stream(name, images, 4, 0, args)]
    return all(np.array_equal(a, b) for a, b in zip(full[2:], resumed)) and all(
        np.array_equal(a, b) for a, b in zip(full, again)
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--steps_per_window", type=int, default=4)
    parser.add_argument("--magnitude", type=float, default=0.5)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--only", default="keras-cv,keras3/image,keras3/batch")
    args = parser.parse_args()
    images, _ = synthetic.generate(1024, seed=0)
    images = tf.constant(images)
    print(
        f"TF {tf.__version__}, Keras {keras.__version__}, batch "
        f"{args.batch_size}, {args.windows} windows of "
        f"{args.steps_per_window} batches"
    )
    print("| augmenter | img/s (median) | min | max | resume exact |")
    print("|---|---|---|---|---|")
    for name in args.only.split(","):
        rates = measure(name, images, args)
        exact = resume_is_exact(name, images, args)
        print(
            f"| {name} | {statistics.median(rates):,.0f} | "
            f"{min(rates):,.0f} | {max(rates):,.0f} | {exact} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
