"""Training and evaluation input pipelines.

Both pipelines yield raw pixel values: float32 images on the 0-255 scale
(models standardise them with `tfgraft.layers.Standardize`) and int32
labels, or float32 mixed one-hot labels when MixUp/CutMix is on.

The training stream is infinite and a pure function of `(seed, step)`:

* epoch `e` visits the training set in its own permutation, seeded by
  `(seed, e)`; each epoch has `steps_per_epoch` full batches and drops the
  remainder;
* the random augmentation of the batch of global step `s` is seeded by
  `(seed, s)` (per image `(seed, element index)` for streaming sources).

So `train_dataset(start_step=k)` yields exactly what
`train_dataset(start_step=0)` yields from its k-th batch on, which is how a
run resumes, and two seeds give two independent streams (each grafted net
gets its own).

In-memory sources never map per element: the uint8 arrays stay one tensor,
tf.data produces per-step index batches, and each batch is gathered and
augmented with vectorised stateless ops.
"""

import numpy as np
import tensorflow as tf

from tfgraft.config import DataConfig
from tfgraft.data import augment as augment_lib
from tfgraft.data import base

# Seed domains, so that epoch permutations and batch augmentations drawn
# from the same user seed are independent.
_PERMUTATION_TAG = 0x9E12
_AUGMENT_TAG = 0xA06E
_INT64_MAX = np.iinfo(np.int64).max


def steps_per_epoch(info_or_source, batch_size):
    """Full training batches per epoch (the remainder is dropped).

    Args:
        info_or_source: a `DatasetInfo` or a `Source`.
        batch_size: global batch size.

    Returns:
        `num_train // batch_size`.

    Raises:
        DataError: naming `batch_size` if that is less than one batch.
    """
    info = getattr(info_or_source, "info", info_or_source)
    _check_batch_size(batch_size)
    steps = info.num_train // int(batch_size)
    if steps < 1:
        raise base.DataError(
            "{batch_size} is larger than the "
            f"{info.num_train} training images of {info.name}.",
            batch_size=batch_size,
        )
    return steps


def _check_batch_size(batch_size):
    if int(batch_size) < 1:
        raise base.DataError(
            "{batch_size}: must be >= 1.", batch_size=batch_size
        )


def _seed_pair(seed, tag):
    return tf.constant([int(seed), tag], tf.int64)


def train_dataset(
    source,
    *,
    batch_size,
    seed,
    start_step=0,
    augment=DataConfig(),
    randaugment_magnitude=0.5,
    randaugment_layers=2,
):
    """The infinite training stream of global batches.

    Args:
        source: a `Source` from `load_source`.
        batch_size: global batch size.
        seed: integer seed of the data order and the augmentation.
        start_step: global step of the first batch (for resuming).
        augment: a `tfgraft.config.DataConfig`, read for its augmentation
            knobs: `augment` (the recipe; `auto`: the source's), `flip`,
            `randaugment`, `mixup_alpha` and `cutmix_alpha` (with both
            on, each batch uses one of the two at random).
        randaugment_magnitude: RandAugment magnitude in [0, 1], fixed
            (`magnitude_stddev=0`, as in the RandAugment paper) so the
            stream stays a pure function of `(seed, step)`.
        randaugment_layers: RandAugment augmentations per image.

    Returns:
        A `tf.data.Dataset` of `(images, labels)`: float32 `[B, H, W, 3]` on
        the 0-255 scale and int32 `[B]` labels, or float32 `[B, K]` mixed
        one-hot labels when MixUp or CutMix is on.

    Example:

    >>> from tfgraft.data import load_source
    >>> source = load_source("synthetic", synthetic_train_size=64,
    ...                      synthetic_test_size=8)
    >>> images, labels = next(iter(train_dataset(source, batch_size=16,
    ...                                          seed=0)))
    >>> images.shape, labels.dtype.name
    (TensorShape([16, 32, 32, 3]), 'int32')
    """
    if int(start_step) < 0:
        raise ValueError(f"start_step must be >= 0. Received: {start_step}")
    info = source.info
    recipe = info.recipe if augment.augment == "auto" else augment.augment
    _check_recipe(info, recipe)
    steps = steps_per_epoch(info, batch_size)
    if source.in_memory:
        ds = _in_memory_train(
            source, batch_size, seed, start_step, recipe, augment.flip
        )
    else:
        ds = _streaming_train(
            source, batch_size, seed, start_step, recipe, steps, augment.flip
        )
    # From here on elements are (step, images, labels) batches.
    if augment.randaugment:
        augmenter = augment_lib.RandAugmenter(
            randaugment_magnitude, randaugment_layers
        )

        def rand_augment(step, images, labels):
            step_seed = _step_seed(seed, step, 1)
            return step, augmenter(images, step_seed), labels

        # Sequential on purpose: RandAugmenter reseeds shared generators.
        ds = ds.map(rand_augment, num_parallel_calls=None)
    if augment.mixup_alpha > 0.0 or augment.cutmix_alpha > 0.0:

        def mix(step, images, labels):
            images, labels = augment_lib.mix_batch(
                images,
                labels,
                _step_seed(seed, step, 2),
                info.num_classes,
                augment,
            )
            return step, images, labels

        ds = ds.map(mix, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(lambda step, images, labels: (images, labels))
    return ds.prefetch(tf.data.AUTOTUNE)


def _step_seed(seed, step, stage):
    """Seed of one pipeline stage (crop/flip, RandAugment, mix) of a step."""
    step_seed = tf.random.experimental.stateless_fold_in(
        _seed_pair(seed, _AUGMENT_TAG), step
    )
    return tf.random.experimental.stateless_fold_in(step_seed, stage)


def _check_recipe(info, recipe):
    if recipe == "cifar" and info.recipe == "imagenet":
        raise base.DataError(
            f"augmentation recipe 'cifar' needs fixed-size images, but "
            f"{info.name} has images of varying size; use 'imagenet' or "
            "'auto'."
        )


def _batch_augment(images, seed, recipe, out_size, flip=True):
    if recipe == "cifar":
        return augment_lib.pad_crop_flip(images, seed, flip=flip)
    if recipe == "imagenet":
        return augment_lib.random_resized_crop_flip(
            images, seed, out_size, flip=flip
        )
    return tf.cast(images, tf.float32)


def index_batches(num, batch_size, *, seed, start_step=0, tag=None):
    """Endless `(step, indices)` batches over `num` in-memory examples.

    Every epoch is a fresh stateless shuffle of `range(num)` (a function
    of `seed`, `tag` and the epoch only) cut into `num // batch_size` full
    batches; the remainder is dropped, so batches never straddle epochs.
    Starting at `start_step` skips index batches only, before anything is
    gathered, so resuming is free and yields exactly the batches an
    uninterrupted run would. Map the result with `tf.gather` on the data.

    Args:
        num: number of examples (rows of the arrays to gather from).
        batch_size: examples per batch.
        seed: integer seed.
        start_step: global step of the first batch.
        tag: integer mixed into the shuffle seed (pipelines with their own
            tag draw other orders from the same seed); default: the
            standard training pipeline's.

    Returns:
        A `tf.data.Dataset` of `(step int64, indices int64[batch_size])`.
    """
    steps = int(num) // int(batch_size)
    if steps < 1:
        raise ValueError(
            f"batch_size must be <= num. Received: batch_size={batch_size}, "
            f"num={num}"
        )
    used = steps * int(batch_size)
    tag = _PERMUTATION_TAG if tag is None else tag
    permutation_seed = _seed_pair(seed, tag)

    def epoch_batches(epoch):
        order = base.permutation(permutation_seed, epoch, num)
        batches = tf.reshape(order[:used], [steps, batch_size])
        step_ids = epoch * steps + tf.range(steps, dtype=tf.int64)
        return tf.data.Dataset.from_tensor_slices((step_ids, batches))

    return base.endless_epochs(start_step, steps, epoch_batches)


def _in_memory_train(source, batch_size, seed, start_step, recipe, flip):
    images, labels = map(tf.constant, source.arrays("train"))
    out_size = tuple(source.info.image_shape[:2])

    def make_batch(step, index):
        batch = _batch_augment(
            tf.gather(images, index),
            _step_seed(seed, step, 0),
            recipe,
            out_size,
            flip,
        )
        return step, batch, tf.gather(labels, index)

    ds = index_batches(
        labels.shape[0], batch_size, seed=seed, start_step=start_step
    )
    return ds.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE)


def _streaming_train(
    source, batch_size, seed, start_step, recipe, steps, flip
):
    info = source.info
    num = info.num_train
    used = steps * batch_size
    start_epoch, skip = divmod(int(start_step), steps)
    start = start_epoch * num + skip * batch_size
    out_size = tuple(info.image_shape[:2])
    element_seed = _seed_pair(seed, _AUGMENT_TAG + 1)

    elements = tf.data.Dataset.zip(
        tf.data.Dataset.range(start, _INT64_MAX),
        source.stream("train", seed=seed, start=start),
    )
    # Each epoch keeps its first `used` elements so batches never straddle
    # two epochs, exactly as the in-memory path drops the remainder.
    elements = elements.filter(lambda index, example: index % num < used)

    def augment_one(index, example):
        image, label = example
        key = tf.random.experimental.stateless_fold_in(element_seed, index)
        if recipe == "cifar":
            out = augment_lib.pad_crop_flip(image[None], key, flip=flip)[0]
        elif recipe == "imagenet":
            out = augment_lib.random_resized_crop_flip_image(
                image, key, out_size, flip=flip
            )
        else:
            out = _eval_transform(image, info)
        return out, label

    ds = elements.map(augment_one, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True)
    steps_ds = tf.data.Dataset.range(start_step, _INT64_MAX)
    return tf.data.Dataset.zip(steps_ds, ds).map(
        lambda step, batch: (step, batch[0], batch[1])
    )


def _eval_transform(image, info):
    if info.recipe == "imagenet":
        return augment_lib.resize_center_crop(image, info.image_shape[:2])
    return tf.cast(image, tf.float32)


def eval_dataset(source, *, batch_size, split="test"):
    """The finite evaluation stream in fixed order.

    Args:
        source: a `Source`.
        batch_size: batch size; the last partial batch is kept.
        split: `"test"` or `"train"`.

    Returns:
        A `tf.data.Dataset` of `(images, labels)`: float32 `[B, H, W, 3]` on
        the 0-255 scale and int32 `[B]`. CIFAR recipe: the images as they
        are; ImageNet recipe: shorter side resized to 256, centre crop 224.
    """
    _check_batch_size(batch_size)
    info = source.info
    if source.in_memory:
        images, labels = map(tf.constant, source.arrays(split))
        num = labels.shape[0]

        def make_batch(begin):
            end = tf.minimum(begin + batch_size, num)
            return _eval_transform(images[begin:end], info), labels[begin:end]

        ds = tf.data.Dataset.range(0, num, batch_size)
        ds = ds.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = source.dataset(split).map(
            lambda image, label: (_eval_transform(image, info), label),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        ds = ds.batch(batch_size)
    return ds.prefetch(tf.data.AUTOTUNE)
