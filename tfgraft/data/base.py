"""What every data source shares: `Source`, `DatasetInfo`, `DataError`.

The base of `tfgraft.data`'s sources. `sources.py` (the dispatcher,
`load_source`), `folder_source.py` and `tfds_source.py` import this
module and not each other: the source classes, the data set description,
the one-line error, the normalisation constants, the seeded epoch
shuffle and the image decoding all live here.
"""


import dataclasses

import numpy as np
import tensorflow as tf

from tfgraft import errors

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_SIZE = 224

# Images whose longer side is at most this many pixels are "small": they get
# the CIFAR recipe and, when there are not too many, live in memory.
SMALL_IMAGE_MAX_SIDE = 64
# Largest in-memory split set, in bytes of uint8 pixels. Larger small-image
# sets stream instead; this also keeps the arrays (captured by tf.data
# functions) well below the 2 GB GraphDef limit.
MAX_IN_MEMORY_BYTES = 1 << 30

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
SPLITS = ("train", "test")
# Leading bytes of the image formats `decode_image` reads.
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"RIFF")


class DataError(errors.ArgumentError):
    """Bad data set input; one line naming the argument or file at fault."""


def spec_error(spec, text):
    """The `DataError` `spec=<spec>: <text>`."""
    return DataError("{spec}: " + text, spec=spec)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model and the pipeline need to know about a data set.

    Attributes:
        name: the spec, e.g. `"synthetic"`, `"tfds:cifar10"` or
            `"folder:/abs/path"`.
        num_classes: number of classes.
        image_shape: model input `(H, W, 3)`: the native size for the CIFAR
            recipe, `(224, 224, 3)` for the ImageNet recipe.
        num_train: number of training images.
        num_test: number of test images.
        mean: per-channel mean on the 0-1 scale (for `Standardize`).
        std: per-channel standard deviation on the 0-1 scale.
        recipe: `"cifar"` or `"imagenet"`, the default augmentation.
        class_names: one name per class, in label order.
    """

    name: str
    num_classes: int
    image_shape: tuple
    num_train: int
    num_test: int
    mean: tuple
    std: tuple
    recipe: str
    class_names: tuple

    def num_examples(self, split):
        check_split(split)
        return self.num_train if split == "train" else self.num_test


class Source:
    """Base class of all data sources.

    Attributes:
        info: the `DatasetInfo`.
        in_memory: whether `arrays()` is available.
    """

    info: DatasetInfo
    in_memory: bool = False

    def arrays(self, split):
        """Returns `(images, labels)`: uint8 `[N, H, W, 3]`, int32 `[N]`."""
        raise NotImplementedError(
            f"{type(self).__name__} streams its data; it has no arrays()."
        )

    def dataset(self, split):
        """Unbatched `(uint8 [h, w, 3], int32 [])` elements, fixed order."""
        raise NotImplementedError

    def stream(self, split, *, seed, start=0):
        """Endless shuffled `(uint8 image, int32 label)` elements.

        Element `k` of the stream is element `k % N` of epoch `k // N`, where
        each epoch is its own shuffle seeded by `(seed, epoch)`. The stream
        from `start` equals the stream from 0 with `start` elements dropped,
        but the source skips them cheaply (before decoding).

        Args:
            split: `"train"` or `"test"`.
            seed: integer seed of the shuffles.
            start: index of the first element to yield.
        """
        raise NotImplementedError


class ArraySource(Source):
    """A source held in numpy arrays (synthetic, small TFDS, small folders)."""

    in_memory = True

    def __init__(self, info, splits):
        self.info = info
        self._splits = {}
        for split in SPLITS:
            images, labels = map(np.asarray, splits[split])
            if images.dtype != np.uint8 or images.ndim != 4:
                raise ValueError(
                    "ArraySource needs uint8 [N, H, W, 3] images. "
                    f"Received: {split} images {images.dtype}{images.shape}"
                )
            if labels.shape != (images.shape[0],):
                raise ValueError(
                    "ArraySource needs one label per image. Received: "
                    f"{images.shape[0]} {split} images, labels "
                    f"{labels.shape}"
                )
            self._splits[split] = (
                np.ascontiguousarray(images),
                np.asarray(labels, np.int32),
            )

    def arrays(self, split):
        check_split(split)
        return self._splits[split]

    def dataset(self, split):
        images, labels = self.arrays(split)
        return tf.data.Dataset.from_tensor_slices((images, labels))

    def stream(self, split, *, seed, start=0):
        images, labels = self.arrays(split)
        pair = tf.constant(images), tf.constant(labels)
        return shuffled(pair, seed, start)


def endless_epochs(start, epoch_size, epoch):
    """The elements of `epoch(0)`, `epoch(1)`, ... without end, from
    element `start` on; `epoch(e)` is a dataset of `epoch_size` elements
    (the epochs before `start`'s are never built)."""
    start_epoch, offset = divmod(int(start), epoch_size)
    epochs = tf.data.Dataset.range(start_epoch, np.iinfo(np.int64).max)
    return epochs.flat_map(epoch).skip(offset)


def permutation(key, epoch, num):
    """int64 `range(num)` shuffled by the int64 `[2]` seed `key` folded
    with `epoch`."""
    epoch_seed = tf.random.experimental.stateless_fold_in(key, epoch)
    return tf.random.experimental.stateless_shuffle(
        tf.range(num, dtype=tf.int64), seed=epoch_seed
    )


def epoch_indices(num_examples, seed, start):
    """Endless int64 indices: epoch e is a permutation seeded by (seed, e)."""
    if num_examples <= 0:
        raise ValueError(
            f"Cannot stream an empty split. Received: {num_examples} examples"
        )
    key = tf.constant([int(seed), 0x5EED], tf.int64)
    return endless_epochs(
        start,
        num_examples,
        lambda epoch: tf.data.Dataset.from_tensor_slices(
            permutation(key, epoch, num_examples)
        ),
    )


def shuffled(pair, seed, start):
    """`(first[i], second[i])` of a pair of equal-length tensors, for the
    indices `i` of `epoch_indices`."""
    first, second = pair
    indices = epoch_indices(int(second.shape[0]), seed, start)
    return indices.map(lambda index: (first[index], second[index]))


def check_split(split):
    """Raises the one-line `ValueError` unless `split` is train or test."""
    if split not in SPLITS:
        raise ValueError(
            f"split must be 'train' or 'test'. Received: split={split!r}"
        )


def channel_stats(images):
    """Per-channel mean and std on the 0-1 scale of uint8 `[N, H, W, 3]`."""
    if images.shape[0] == 0:
        raise ValueError("channel_stats needs at least one image.")
    total = np.zeros(3, np.float64)
    total_sq = np.zeros(3, np.float64)
    # Chunks keep the float64 temporaries small for CIFAR-sized arrays.
    for chunk in np.array_split(images, max(1, images.shape[0] // 4096)):
        pixels = chunk.reshape(-1, 3).astype(np.float64)
        total += pixels.sum(0)
        total_sq += np.square(pixels).sum(0)
    count = images.shape[0] * images.shape[1] * images.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
    return tuple((mean / 255.0).tolist()), tuple((std / 255.0).tolist())


def storage(num_images, height, width):
    """How a set of `num_images` images of `height` x `width` (None:
    varying) is held: `"memory"` (small images, at most
    `MAX_IN_MEMORY_BYTES` in all), `"small"` (small images, streamed) or
    `"large"` (streamed)."""
    if height is None or width is None:
        return "large"
    if max(height, width) > SMALL_IMAGE_MAX_SIDE:
        return "large"
    if num_images * height * width * 3 <= MAX_IN_MEMORY_BYTES:
        return "memory"
    return "small"


def image_info(common, size=None, stats=(IMAGENET_MEAN, IMAGENET_STD)):
    """The `DatasetInfo` of `common` (its other fields) and a recipe.

    `size` `(h, w)`: small images of that size, the CIFAR recipe with
    `stats`, a `(mean, std)` pair (the ImageNet ones are a neutral
    default); None: the ImageNet recipe at `IMAGENET_SIZE` px with the
    ImageNet statistics.
    """
    if size is None:
        return DatasetInfo(
            image_shape=(IMAGENET_SIZE, IMAGENET_SIZE, 3),
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            recipe="imagenet",
            **common,
        )
    mean, std = stats
    return DatasetInfo(
        image_shape=(*size, 3), mean=mean, std=std, recipe="cifar", **common
    )


def decode_image(contents, path):
    """Decodes JPEG/PNG/GIF/BMP/WebP bytes to uint8 `[h, w, 3]` inside tf.data.

    A file that is not one of these formats fails with an error that names
    `path`, rather than TensorFlow's anonymous "Unknown image file format".
    """
    prefix = tf.strings.substr(contents, 0, 4)
    known = tf.reduce_any(
        [tf.strings.substr(prefix, 0, len(m)) == m for m in IMAGE_MAGIC]
    )
    check = tf.debugging.Assert(known, ["Undecodable image file:", path])
    with tf.control_dependencies([check]):
        image = tf.io.decode_image(
            contents, channels=3, expand_animations=False
        )
    return tf.ensure_shape(image, [None, None, 3])
