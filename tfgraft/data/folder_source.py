"""Image-folder sources: `<root>/train/<class>/*` and `<root>/test|val/...`.

The class index is the position of the class folder in sorted order, as in
`torchvision.datasets.ImageFolder` and
`keras.utils.image_dataset_from_directory`. Small images (longer side
<= 64 px) are decoded into memory at load time and get the CIFAR recipe;
larger ones are decoded on the fly inside tf.data and get the ImageNet
recipe. Every problem found while loading raises a one-line `DataError` that
names the folder or file at fault.
"""

import collections
import os

import numpy as np
import tensorflow as tf

from tfgraft import io
from tfgraft.data import base
from tfgraft.data.base import decode_image

# Header checks of a streaming tree read a few bytes of every file; beyond
# this many files that costs more than it saves and decode-time asserts
# (which also name the file) take over.
MAX_HEADER_CHECKS = 50_000


def load(path):
    """Opens `path` as an image-folder tree; see the module docstring."""
    root = os.path.abspath(os.path.expanduser(path))
    spec = f"folder:{path}"
    if not os.path.isdir(root):
        raise base.spec_error(spec, f"folder {root} does not exist.")
    train_dir = os.path.join(root, "train")
    if not os.path.isdir(train_dir):
        raise base.spec_error(spec, f"{root} has no train/ folder.")
    candidates = [os.path.join(root, name) for name in ("test", "val")]
    test_dir = next((d for d in candidates if os.path.isdir(d)), None)
    if test_dir is None:
        raise base.spec_error(spec, f"{root} has no test/ or val/ folder.")

    class_names = _class_folders(train_dir, spec)
    if not class_names:
        raise base.spec_error(spec, f"{train_dir} has no class folders.")
    test_classes = _class_folders(test_dir, spec)
    if test_classes != class_names:
        only_train = sorted(set(class_names) - set(test_classes))
        only_test = sorted(set(test_classes) - set(class_names))
        raise base.spec_error(
            spec,
            "class folders of train/ and "
            f"{os.path.basename(test_dir)}/ differ: only in train: "
            f"{only_train or 'none'}; only in "
            f"{os.path.basename(test_dir)}: {only_test or 'none'}.",
        )
    files = {
        "train": _list_images(train_dir, class_names, spec),
        "test": _list_images(test_dir, class_names, spec),
    }

    height, width = _common_size(files["train"][0], spec)
    num_images = sum(len(paths) for paths, _ in files.values())
    common = dict(
        name=f"folder:{root}",
        num_classes=len(class_names),
        num_train=len(files["train"][0]),
        num_test=len(files["test"][0]),
        class_names=tuple(class_names),
    )
    storage = base.storage(num_images, height, width)
    if storage == "memory":
        splits = {
            split: (_decode_all(paths, (height, width, 3), spec), labels)
            for split, (paths, labels) in files.items()
        }
        stats = base.channel_stats(splits["train"][0])
        info = base.image_info(common, (height, width), stats)
        return base.ArraySource(info, splits)

    if num_images <= MAX_HEADER_CHECKS:
        for paths, _ in files.values():
            for file in paths:
                _check_header(file, spec)
    # Too many small images to hold in memory are streamed with the CIFAR
    # recipe and the ImageNet statistics as a neutral default.
    size = (height, width) if storage == "small" else None
    return FolderStreamSource(base.image_info(common, size), files)


class FolderStreamSource(base.Source):
    """An image-folder tree decoded on the fly inside tf.data."""

    in_memory = False

    def __init__(self, info, files):
        self.info = info
        self._files = {
            split: (
                tf.constant(paths, tf.string),
                tf.constant(np.asarray(labels, np.int32)),
            )
            for split, (paths, labels) in files.items()
        }

    def dataset(self, split):
        base.check_split(split)
        paths, labels = self._files[split]
        ds = tf.data.Dataset.from_tensor_slices((paths, labels))
        return ds.map(self._decode, num_parallel_calls=tf.data.AUTOTUNE)

    def stream(self, split, *, seed, start=0):
        base.check_split(split)
        # Shuffle and skip file names; only the images we keep get decoded.
        ds = base.shuffled(self._files[split], seed, start)
        return ds.map(self._decode, num_parallel_calls=tf.data.AUTOTUNE)

    def _decode(self, path, label):
        # The CIFAR recipe's small images have one fixed size.
        fixed = self.info.recipe == "cifar"
        shape = self.info.image_shape if fixed else None
        return _read_image(path, shape), label


def _read_image(path, shape=None):
    """Decodes one image file inside tf.data; a `shape` is asserted with an
    error that names the file."""
    image = decode_image(tf.io.read_file(path), path)
    if shape is None:
        return image
    expected = list(shape)
    check = tf.debugging.Assert(
        tf.reduce_all(tf.equal(tf.shape(image), expected)),
        ["Image size differs from", expected, "in file", path],
    )
    with tf.control_dependencies([check]):
        image = tf.identity(image)
    return tf.ensure_shape(image, expected)


def _common_size(paths, spec, samples=9):
    """(height, width) most of `samples` spread-out files have.

    Not simply the first file's: an odd first file would make every good
    file look wrong.
    """
    step = max(1, len(paths) // samples)
    sizes = [_decode_file(p, spec).shape[:2] for p in paths[::step][:samples]]
    return collections.Counter(sizes).most_common(1)[0][0]


def _scan(folder, spec):
    """`os.scandir(folder)` as (entry, is_dir, is_file); an entry that
    cannot be examined (a symlink loop, no permission) is a `DataError`
    naming it."""
    out = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
        raise _cannot("list", folder, e, spec) from None
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            out.append((entry, entry.is_dir(), entry.is_file()))
        except OSError as e:
            raise _cannot("read", entry.path, e, spec) from None
    return out


def _cannot(what, path, error, spec):
    """The `DataError` of an `OSError` while doing `what` to `path`."""
    return base.spec_error(spec, f"cannot {what} {path} ({error.strerror}).")


def _class_folders(split_dir, spec=""):
    return [entry.name for entry, is_dir, _ in _scan(split_dir, spec) if is_dir]


def _list_images(split_dir, class_names, spec):
    paths, labels = [], []
    for label, class_name in enumerate(class_names):
        class_dir = os.path.join(split_dir, class_name)
        images = [
            entry.name
            for entry, _, is_file in _scan(class_dir, spec)
            if is_file
            and entry.name.lower().endswith(base.IMAGE_EXTENSIONS)
        ]
        if not images:
            raise base.spec_error(
                spec,
                f"class folder {class_dir} has no images "
                f"({'/'.join(base.IMAGE_EXTENSIONS)}).",
            )
        paths.extend(os.path.join(class_dir, name) for name in images)
        labels.extend([label] * len(images))
    return paths, labels


def _decode_file(path, spec):
    """Eagerly decodes one file, naming it if it is broken."""
    try:
        with open(path, "rb") as f:
            contents = f.read()
        if not contents.startswith(base.IMAGE_MAGIC):
            raise ValueError("unknown format")
        image = tf.io.decode_image(
            contents, channels=3, expand_animations=False
        )
    except (OSError, ValueError, tf.errors.OpError) as e:
        reason = io.first_line(e, "")
        raise base.spec_error(
            spec, f"cannot decode image file {path} ({reason})."
        ) from None
    return image.numpy()


def _check_header(path, spec):
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise _cannot("read image file", path, e, spec) from None
    if not head.startswith(base.IMAGE_MAGIC):
        raise base.spec_error(
            spec,
            f"cannot decode image file {path} (not a JPEG, PNG, GIF, BMP or "
            "WebP file).",
        )


def _decode_all(paths, shape, spec):
    """Decodes every file to one uint8 array of `shape` images.

    The fast path decodes in parallel inside tf.data. If anything fails, the
    files are decoded again one by one so the error can name the file.
    """
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(paths, tf.string))
    ds = ds.map(
        lambda path: _read_image(path, shape),
        num_parallel_calls=tf.data.AUTOTUNE,
    ).batch(1024)
    try:
        return np.concatenate([batch.numpy() for batch in ds], axis=0)
    except tf.errors.OpError:
        pass
    sizes = {path: _decode_file(path, spec).shape for path in paths}
    counts = collections.Counter(sizes.values())
    common = counts.most_common(1)[0][0]
    if len(counts) > 1:
        # Blame the minority: the first file not of the commonest size.
        path = next(p for p, s in sizes.items() if s != common)
        odd = sizes[path]
        raise base.spec_error(
            spec,
            f"image file {path} is {odd[1]}x{odd[0]}, but "
            f"{counts[common]} of the {len(paths)} images are "
            f"{common[1]}x{common[0]}; all must have one size.",
        )
    if common != tuple(shape):
        raise base.spec_error(
            spec,
            f"image file {paths[0]} is {common[1]}x{common[0]} (as all of "
            f"its split), but the train images are {shape[1]}x{shape[0]}; "
            "all must have one size.",
        )
    raise base.spec_error(
        spec, "decoding the images failed, but none failed on its own."
    )
