"""Data sources: where images come from, before any augmentation.

A `Source` hands out raw uint8 RGB images and int32 labels, plus a
`DatasetInfo` describing them. Three kinds exist, picked by the spec given
to `load_source`:

* `synthetic`: the procedural shapes set of `tfgraft.data.synthetic`,
  in memory.
* `tfds:<name>`: a prepared TensorFlow Datasets dataset (`tfds_source`).
* `folder:<path>`: an image-folder tree `<path>/{train,test|val}/<class>/*`
  (`folder_source`).

In-memory sources (`in_memory=True`) expose whole splits as numpy arrays so
that the pipeline can gather and augment whole batches at once; streaming
sources expose `stream()` (see `Source.stream`; this is how training
resumes).

This module is the dispatcher: `load_source` picks the kind. What the
kinds share lives in `tfgraft.data.base`; `Source`, `ArraySource`,
`DatasetInfo` and `DataError` stay importable from here.
"""

from tfgraft import errors
from tfgraft.data import folder_source
from tfgraft.data import synthetic
from tfgraft.data import tfds_source
from tfgraft.data.base import ArraySource
from tfgraft.data.base import DataError
from tfgraft.data.base import DatasetInfo
from tfgraft.data.base import Source
from tfgraft.data.base import channel_stats
from tfgraft.data.base import image_info

__all__ = [
    "ArraySource",
    "DataError",
    "DatasetInfo",
    "Source",
    "load_source",
    "source_for",
]


def load_source(
    spec,
    *,
    data_dir=None,
    synthetic_train_size=10000,
    synthetic_test_size=2000,
    seed=0,
):
    """Opens the data set a spec names.

    Args:
        spec: `"synthetic"`, `"tfds:<name>"` or `"folder:<path>"` (relative
            paths resolve against the current directory).
        data_dir: TFDS data directory; `None` means the TFDS
            default. Ignored by the other kinds.
        synthetic_train_size: number of synthetic training images.
        synthetic_test_size: number of synthetic test images.
        seed: seed of the synthetic images.

    Returns:
        A `Source`.

    Raises:
        DataError: with a one-line message naming the argument
            (`spec='folder:x'`) or file at fault.

    Example:

    >>> source = load_source("synthetic", synthetic_train_size=20,
    ...                      synthetic_test_size=10)
    >>> source.info.image_shape, source.info.num_classes
    ((32, 32, 3), 10)
    """
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(
            "{spec}: must be 'synthetic', 'tfds:<name>' or 'folder:<path>'.",
            spec=spec,
        )
    spec = spec.strip()
    kind, _, arg = spec.partition(":")
    if kind == "synthetic" and not arg:
        return _load_synthetic(synthetic_train_size, synthetic_test_size, seed)
    if kind == "tfds" and arg:
        return tfds_source.load(arg, data_dir=data_dir)
    if kind == "folder" and arg:
        return folder_source.load(arg)
    raise DataError(
        "{spec} is not 'synthetic', 'tfds:<name>' or 'folder:<path>'.",
        spec=spec,
    )


def source_for(data, seed):
    """`load_source` for a `tfgraft.config.DataConfig` (errors name its
    `dataset` field) and the run's `seed`."""
    with errors.flag_names(spec="dataset"):
        return load_source(
            data.dataset,
            data_dir=data.data_dir,
            synthetic_train_size=data.synthetic_train_size,
            synthetic_test_size=data.synthetic_test_size,
            seed=seed,
        )


def _load_synthetic(train_size, test_size, seed):
    for name, size in (
        ("synthetic_train_size", train_size),
        ("synthetic_test_size", test_size),
    ):
        if int(size) < 1:
            raise DataError("{%s}: must be >= 1." % name, **{name: size})
    train = synthetic.generate(train_size, seed=seed, split="train")
    test = synthetic.generate(test_size, seed=seed, split="test")
    common = dict(
        name="synthetic",
        num_classes=synthetic.NUM_CLASSES,
        num_train=int(train_size),
        num_test=int(test_size),
        class_names=synthetic.CLASS_NAMES,
    )
    size = (synthetic.IMAGE_SIZE, synthetic.IMAGE_SIZE)
    info = image_info(common, size, channel_stats(train[0]))
    return ArraySource(info, {"train": train, "test": test})
