"""EKG's data recipe on top of `tfgraft.data` in-memory sources.

* `search_split`: the fixed search sets of METHODS §3.3 (`search_indices`).
* `ekg_augment`: the reference's CIFAR augmentation: optional colour jitter
  (contrast and saturation factors in [0.8, 1.2], brightness +-0.2 on the
  0-255 scale), horizontal flip per image, reflect-pad 4 and a crop whose
  offset is drawn once per batch (the colour factors too).
* `train_dataset`: the fine-tuning stream, a pure function of
  `(seed, step)` like `tfgraft.data.train_dataset`, with one or two views
  per image and, for knowledge distillation, each image's cached teacher
  logits next to its label.

Images stay on the 0-255 scale (the models standardise them); flip,
padding and crop commute with that per-channel affine map.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from tfgraft.data import augment as augment_lib
from tfgraft.data import pipeline
from tfgraft.data import sources

PADDING = 4
_PERMUTATION_TAG = 0xE6A1
_AUGMENT_TAG = 0xE6A2


def _arrays(source, split="train"):
    if not source.in_memory:
        raise sources.DataError(
            "{source}: EKG needs an in-memory dataset (fixed search sets "
            "and per-image teacher logits)",
            source=source.info.name,
        )
    return source.arrays(split)


@dataclasses.dataclass(frozen=True)
class SearchData:
    """The fixed search sets (uint8 images, int32 labels).

    `train_index` and `val_index` are the rows of the source's training
    split that the images and labels were taken from, in set order.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    train_index: np.ndarray
    val_index: np.ndarray


def search_indices(labels, *, train_per_class=256, val_per_class=32, seed=1):
    """Rows of `train_sub` and `val` in a label array (METHODS §3.3).

    The reference's `sampler`: class by class (ascending labels), `val`
    takes the last `val_per_class` rows of the class **last first**
    (`idx[:-33:-1]` for 32) and `train_sub` the first `train_per_class`
    (`idx[:256]`; tfgraft stops short of the val rows in a class too small
    for both). Each set's concatenation is then shuffled as
    `np.random.seed(seed); np.random.shuffle(rows)`, the generator reseeded
    for each set, so the search batches hold the reference's images.

    Returns:
        `(train_rows, val_rows)`, int64 arrays.

    Raises:
        DataError: a class has no row left for `train_sub`.
    """
    labels = np.asarray(labels).reshape(-1)
    train_idx, val_idx = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if idx.size <= val_per_class:
            raise sources.DataError(
                "{val_per_class}: "
                f"class {c} has only {idx.size} training images",
                val_per_class=val_per_class,
            )
        val_idx.append(idx[::-1][:val_per_class])
        train_idx.append(idx[: min(train_per_class, idx.size - val_per_class)])
    out = []
    for rows in (np.concatenate(train_idx), np.concatenate(val_idx)):
        rows = rows.astype(np.int64)
        # Legacy RandomState: np.random.seed + shuffle's exact stream.
        np.random.RandomState(seed).shuffle(rows)
        out.append(rows)
    return tuple(out)


def search_split(source, *, train_per_class=256, val_per_class=32, seed=1):
    """`train_sub` and `val` of the search (see `search_indices`).

    Raises:
        DataError: a class has no image left for `train_sub`.
    """
    images, labels = _arrays(source)
    train_idx, val_idx = search_indices(
        labels,
        train_per_class=train_per_class,
        val_per_class=val_per_class,
        seed=seed,
    )
    return SearchData(
        images[train_idx],
        labels[train_idx],
        images[val_idx],
        labels[val_idx],
        train_idx,
        val_idx,
    )


def ekg_augment(images, seed, *, jitter=False, padding=PADDING):
    """EKG's batch augmentation (see the module docstring).

    Args:
        images: `[B, H, W, 3]` pixels on the 0-255 scale (any dtype).
        seed: int64 `[2]` stateless seed.
        jitter: apply the colour jitter.
        padding: reflect padding before the crop.

    Returns:
        float32 `[B, H, W, 3]`.
    """
    x = tf.cast(images, tf.float32)
    shape = tf.shape(x)
    batch, height, width = shape[0], shape[1], shape[2]
    seeds = augment_lib.split_seed(seed, 5)
    if jitter:
        contrast = tf.random.stateless_uniform([], seeds[0], 0.8, 1.2)
        x = tf.image.adjust_contrast(x, contrast)
        saturation = tf.random.stateless_uniform([], seeds[1], 0.8, 1.2)
        # HSV needs [0, 1]; contrast can leave the range, so clip first.
        x = tf.clip_by_value(x / 255.0, 0.0, 1.0)
        x = tf.image.adjust_saturation(x, saturation) * 255.0
        x = x + tf.random.stateless_uniform([], seeds[2], -0.2, 0.2)
    flip = tf.random.stateless_uniform([batch], seeds[3]) < 0.5
    x = tf.where(flip[:, None, None, None], tf.reverse(x, axis=[2]), x)
    x = tf.pad(
        x,
        [[0, 0], [padding, padding], [padding, padding], [0, 0]],
        mode="REFLECT",
    )
    offset = tf.random.stateless_uniform(
        [2], seeds[4], minval=0, maxval=2 * padding + 1, dtype=tf.int32
    )
    return x[
        :,
        offset[0] : offset[0] + height,
        offset[1] : offset[1] + width,
        :,
    ]


def train_dataset(
    source,
    *,
    batch_size,
    seed,
    start_step=0,
    views=1,
    jitter=False,
    knowledge=None,
):
    """The infinite EKG fine-tuning stream of global batches.

    Epoch `e` visits the training set in a permutation seeded by
    `(seed, e)`; view `v` of the batch of step `s` is augmented with a seed
    derived from `(seed, s, v)`, so `start_step=k` resumes exactly.

    Args:
        source: an in-memory `tfgraft.data.Source`.
        batch_size: global batch size.
        seed: integer seed.
        start_step: global step of the first batch.
        views: augmented views per image (1 or 2).
        jitter: colour jitter (the knowledge recipe uses it).
        knowledge: optional float32 `[N, classes, T]` teacher logits,
            aligned with the source's training images.

    Returns:
        A `tf.data.Dataset` of `(images, labels)` where `images` is float32
        `[B, H, W, 3]` (one view) or `[B, views, H, W, 3]`, and `labels` is
        int32 `[B]`, or `(labels, knowledge[B, classes, T])` when
        `knowledge` is given.
    """
    images, labels = _arrays(source)
    # Checks batch_size against the data set (one-line DataError).
    pipeline.steps_per_epoch(source, batch_size)
    return array_dataset(
        images,
        labels,
        batch_size=batch_size,
        seed=seed,
        start_step=start_step,
        views=views,
        jitter=jitter,
        knowledge=knowledge,
    )


def array_dataset(
    images,
    labels,
    *,
    batch_size,
    seed,
    start_step=0,
    views=1,
    jitter=False,
    knowledge=None,
    stack_views=False,
):
    """`train_dataset` on in-memory arrays (images on the 0-255 scale).

    Args:
        images: `[N, H, W, 3]` (any dtype), labels: int `[N]`; the other
            arguments as in `train_dataset`, plus `stack_views`: images are
            `[B, views, H, W, 3]` even for one view.
    """
    if int(start_step) < 0:
        raise ValueError(f"start_step must be >= 0. Received: {start_step}")
    if views not in (1, 2):
        raise ValueError(f"views must be 1 or 2. Received: views={views}")
    num = int(labels.shape[0])
    if knowledge is not None and knowledge.shape[0] != num:
        raise ValueError(
            f"knowledge has {knowledge.shape[0]} rows for {num} training images"
        )
    if not 1 <= int(batch_size) <= num:
        raise ValueError(
            f"batch_size must be in [1, {num}] (the number of images). "
            f"Received: batch_size={batch_size}"
        )
    images = tf.constant(images)
    labels = tf.constant(np.asarray(labels, np.int32))
    knowledge = None if knowledge is None else tf.constant(knowledge)
    augment_seed = tf.constant([int(seed), _AUGMENT_TAG], tf.int64)

    def make_batch(step, index):
        raw = tf.gather(images, index)
        step_seed = tf.random.experimental.stateless_fold_in(augment_seed, step)
        out = [
            ekg_augment(
                raw,
                tf.random.experimental.stateless_fold_in(step_seed, v),
                jitter=jitter,
            )
            for v in range(views)
        ]
        batch = out[0] if views == 1 and not stack_views else tf.stack(out, 1)
        y = tf.gather(labels, index)
        if knowledge is None:
            return batch, y
        return batch, (y, tf.gather(knowledge, index))

    ds = pipeline.index_batches(
        num, batch_size, seed=seed, start_step=start_step, tag=_PERMUTATION_TAG
    )
    ds = ds.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
