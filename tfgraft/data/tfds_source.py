"""TensorFlow Datasets sources (`--dataset=tfds:<name>`).

Nothing is downloaded: the dataset must already be prepared under
`--data_dir` (or the TFDS default directory). Small image sets (CIFAR-10/100
and anything else of <= 64 px that fits in memory) are read once into numpy
arrays; large ones such as `imagenet2012` stream from their TFRecord files,
with the file order and a shuffle buffer reseeded every epoch.
"""

import difflib

import numpy as np
import tensorflow as tf

from tfgraft import io
from tfgraft.data import base
from tfgraft.data.base import decode_image

# Encoded images held by the streaming shuffle buffer (ImageNet JPEGs are
# ~110 KB each, so this is about 1 GB).
SHUFFLE_BUFFER = 10_000
# Files read at once while streaming; also what mixes the file order.
INTERLEAVE_FILES = 16
_CIFAR_NAMES = ("cifar10", "cifar100")


def load(name, *, data_dir=None):
    """Opens the prepared TFDS dataset `name`; see the module docstring."""
    import tensorflow_datasets as tfds

    spec = f"tfds:{name}"
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        wanted = name.split(":")[0].split("/")[0]
        matches = difflib.get_close_matches(
            wanted, tfds.list_builders(), n=3, cutoff=0.6
        )
        hint = f"; did you mean {', '.join(matches)}?" if matches else "."
        raise base.spec_error(
            spec, f"TFDS has no dataset named {wanted!r}{hint}"
        ) from None
    except Exception as e:  # Bad version or config: TFDS says which.
        raise base.spec_error(spec, io.first_line(e)) from None
    if not builder.is_prepared():
        where = "{data_dir}" if data_dir else "the TFDS default directory"
        raise base.DataError(
            "{spec} is not prepared under " + where + " (looked for "
            f"{builder.data_dir}) and cannot be downloaded here; run `tfds "
            f"build {name} --data_dir=DIR` where there is network access and "
            "pass {data_dir!n}=DIR.",
            spec=spec,
            data_dir=data_dir,
        )

    info = builder.info
    image_key, label_key = _feature_keys(info, spec)
    label_feature = info.features[label_key]
    test = next((s for s in ("test", "validation") if s in info.splits), None)
    if "train" not in info.splits or test is None:
        raise base.DataError(
            "{spec} needs a 'train' and a 'test' or 'validation' split; it "
            f"has {sorted(info.splits.keys())}.",
            spec=spec,
        )
    split_names = {"train": "train", "test": test}
    num_train = info.splits["train"].num_examples
    num_test = info.splits[split_names["test"]].num_examples
    height, width = tuple(info.features[image_key].shape)[:2]
    common = dict(
        name=f"tfds:{name}",
        num_classes=int(label_feature.num_classes),
        num_train=int(num_train),
        num_test=int(num_test),
        class_names=tuple(label_feature.names),
    )
    cifar_stats = name.split(":")[0] in _CIFAR_NAMES
    stats = (
        (base.CIFAR_MEAN, base.CIFAR_STD)
        if cifar_stats
        else (base.IMAGENET_MEAN, base.IMAGENET_STD)
    )
    storage = base.storage(num_train + num_test, height, width)
    if storage == "memory":
        splits = {
            split: _read_arrays(builder, tfds_split, image_key, label_key)
            for split, tfds_split in split_names.items()
        }
        if not cifar_stats:
            stats = base.channel_stats(splits["train"][0])
        info = base.image_info(common, (height, width), stats)
        return base.ArraySource(info, splits)
    size = (height, width) if storage == "small" else None
    info = base.image_info(common, size, stats)
    return TfdsStreamSource(info, builder, split_names, image_key, label_key)


class TfdsStreamSource(base.Source):
    """A prepared TFDS dataset read from its files inside tf.data."""

    in_memory = False

    def __init__(self, info, builder, split_names, image_key, label_key):
        import tensorflow_datasets as tfds

        self.info = info
        self._tfds = tfds
        self._builder = builder
        self._split_names = split_names
        self._keys = image_key, label_key
        # Images stay encoded until `_decode`.
        self._decoders = {image_key: tfds.decode.SkipDecoding()}

    def _examples(self, split, **options):
        """`builder.as_dataset(split, **options)` as (encoded, label)."""
        return self._builder.as_dataset(
            split=self._split_names[split], decoders=self._decoders, **options
        ).map(self._pick)

    def dataset(self, split):
        base.check_split(split)
        ds = self._examples(split, shuffle_files=False)
        return ds.map(self._decode, num_parallel_calls=tf.data.AUTOTUNE)

    def stream(self, split, *, seed, start=0):
        base.check_split(split)
        split_info = self._builder.info.splits[self._split_names[split]]
        if self._builder.info.file_format.value != "tfrecord":
            return self._stream_as_dataset(split, seed, start)
        files = tf.constant([str(p) for p in split_info.filepaths])
        key = tf.constant([int(seed), 0xF11E], tf.int64)
        features = self._builder.info.features

        def epoch(index):
            epoch_seed = tf.random.experimental.stateless_fold_in(key, index)
            order = tf.random.experimental.stateless_shuffle(
                tf.range(tf.size(files)), seed=epoch_seed
            )
            records = tf.data.Dataset.from_tensor_slices(
                tf.gather(files, order)
            ).interleave(
                tf.data.TFRecordDataset,
                cycle_length=INTERLEAVE_FILES,
                block_length=1,
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True,
            )
            buffer_seed = tf.random.stateless_uniform(
                [], epoch_seed, minval=None, maxval=None, dtype=tf.int64
            )
            return records.shuffle(SHUFFLE_BUFFER, seed=buffer_seed)

        # Skipping serialized records is cheap: nothing is decoded yet.
        ds = base.endless_epochs(start, split_info.num_examples, epoch)

        def parse(record):
            return self._pick(
                features.deserialize_example(record, decoders=self._decoders)
            )

        ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.map(self._decode, num_parallel_calls=tf.data.AUTOTUNE)

    def _stream_as_dataset(self, split, seed, start):
        # Non-TFRecord formats: let TFDS shuffle the files; the sequence of
        # epochs is still a pure function of the seed.
        read_config = self._tfds.ReadConfig(
            shuffle_seed=int(seed), shuffle_reshuffle_each_iteration=True
        )
        ds = self._examples(split, shuffle_files=True, read_config=read_config)
        ds = ds.shuffle(
            SHUFFLE_BUFFER, seed=int(seed), reshuffle_each_iteration=True
        )
        ds = ds.repeat().skip(int(start))
        return ds.map(self._decode, num_parallel_calls=tf.data.AUTOTUNE)

    def _pick(self, example):
        return tuple(example[key] for key in self._keys)

    def _decode(self, encoded, label):
        image = decode_image(encoded, tf.constant(self.info.name))
        if self.info.recipe == "cifar":  # small images of one fixed size
            image = tf.ensure_shape(image, self.info.image_shape)
        return image, tf.cast(label, tf.int32)


def _feature_keys(info, spec):
    import tensorflow_datasets as tfds

    keys = info.supervised_keys
    if keys and len(keys) == 2 and all(isinstance(k, str) for k in keys):
        image_key, label_key = keys
    else:
        image_key, label_key = "image", "label"
    features = info.features
    if not (
        image_key in features
        and isinstance(features[image_key], tfds.features.Image)
        and label_key in features
        and isinstance(features[label_key], tfds.features.ClassLabel)
    ):
        raise base.DataError(
            "{spec} is not an image classification dataset (needs an Image "
            "feature and a ClassLabel feature).",
            spec=spec,
        )
    return image_key, label_key


def _read_arrays(builder, split, image_key, label_key):
    # batch_size=-1 gives the whole split as one dict of tensors.
    example = builder.as_dataset(
        split=split, shuffle_files=False, batch_size=-1
    )
    images = example[image_key].numpy()
    labels = example[label_key].numpy().astype(np.int32)
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    elif images.shape[-1] == 4:
        images = images[..., :3]
    return images.astype(np.uint8), labels
