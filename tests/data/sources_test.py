"""Tests for tfgraft.data sources: synthetic, image folders and TFDS."""

import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl.testing import parameterized

from tfgraft.data import DataError
from tfgraft.data import base
from tfgraft.data import folder_source
from tfgraft.data import load_source
from tfgraft.data import sources

CIFAR10_SMALL = "/work/shared/data/cifar10-small"


def write_image(path, image, fmt="png"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = tf.constant(image, tf.uint8)
    data = tf.io.encode_png(image) if fmt == "png" else tf.io.encode_jpeg(image)
    tf.io.write_file(path, data)


def make_folder(root, classes=("a", "b"), per_class=(3, 2), size=(8, 8)):
    """Writes root/{train,test}/<class>/<i>.png; returns {path: pixels}."""
    rng = np.random.default_rng(0)
    written = {}
    for split, count in zip(("train", "test"), per_class):
        for cls in classes:
            for i in range(count):
                # Values >= 1 so that zero padding is recognisable.
                image = rng.integers(1, 256, size + (3,), dtype=np.uint8)
                path = os.path.join(root, split, cls, f"{i}.png")
                write_image(path, image)
                written[path] = image
    return written


class FolderSourceTest(tf.test.TestCase, parameterized.TestCase):
    def test_small_folder_loads_into_memory(self):
        root = self.get_temp_dir() + "/small"
        written = make_folder(root, classes=("cat", "ant"), size=(6, 5))
        source = load_source(f"folder:{root}")
        info = source.info
        self.assertTrue(source.in_memory)
        self.assertEqual(info.name, f"folder:{os.path.abspath(root)}")
        self.assertEqual(info.class_names, ("ant", "cat"))  # sorted
        self.assertEqual(info.image_shape, (6, 5, 3))
        self.assertEqual((info.num_train, info.num_test), (6, 4))
        self.assertEqual(info.recipe, "cifar")
        images, labels = source.arrays("train")
        self.assertEqual(images.dtype, np.uint8)
        self.assertEqual(labels.dtype, np.int32)
        np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 1])
        np.testing.assert_array_equal(
            images[3], written[os.path.join(root, "train", "cat", "0.png")]
        )
        train_pixels = np.stack(
            [v for k, v in written.items() if "/train/" in k]
        )
        np.testing.assert_allclose(
            info.mean, train_pixels.mean((0, 1, 2)) / 255.0, atol=1e-6
        )
        np.testing.assert_allclose(
            info.std, train_pixels.std((0, 1, 2)) / 255.0, atol=1e-6
        )
        # dataset() is the same data in the same order.
        ds_images = np.stack([x.numpy() for x, _ in source.dataset("test")])
        np.testing.assert_array_equal(ds_images, source.arrays("test")[0])

    def test_relative_path_and_val_split(self):
        root = self.get_temp_dir() + "/rel"
        make_folder(root)
        os.rename(os.path.join(root, "test"), os.path.join(root, "val"))
        cwd = os.getcwd()
        try:
            os.chdir(self.get_temp_dir())
            source = load_source("folder:rel")
        finally:
            os.chdir(cwd)
        self.assertEqual(source.info.name, f"folder:{os.path.abspath(root)}")
        self.assertEqual(source.info.num_test, 4)

    def test_large_images_stream_with_imagenet_recipe(self):
        root = self.get_temp_dir() + "/large"
        written = make_folder(root, per_class=(2, 1), size=(70, 90))
        source = load_source(f"folder:{root}")
        info = source.info
        self.assertFalse(source.in_memory)
        self.assertEqual(info.recipe, "imagenet")
        self.assertEqual(info.image_shape, (224, 224, 3))
        self.assertEqual(info.mean, base.IMAGENET_MEAN)
        self.assertEqual(info.std, base.IMAGENET_STD)
        with self.assertRaises(NotImplementedError):
            source.arrays("train")
        elements = list(source.dataset("train"))
        self.assertLen(elements, 4)
        np.testing.assert_array_equal(
            elements[2][0].numpy(),
            written[os.path.join(root, "train", "b", "0.png")],
        )
        self.assertEqual(elements[2][1].dtype, tf.int32)

    def test_stream_is_seeded_epoch_permutation_and_resumable(self):
        root = self.get_temp_dir() + "/stream"
        make_folder(root, classes=("a", "b", "c"), per_class=(2, 1))
        source = load_source(f"folder:{root}")
        # Identify images by their first pixel.
        ids = {
            tuple(x.numpy()[0, 0]): i
            for i, (x, _) in enumerate(source.dataset("train"))
        }

        def order(seed, start, count):
            ds = source.stream("train", seed=seed, start=start).take(count)
            return [ids[tuple(x.numpy()[0, 0])] for x, _ in ds]

        full = order(seed=1, start=0, count=18)
        for epoch in range(3):
            self.assertCountEqual(full[6 * epoch : 6 * epoch + 6], range(6))
        self.assertEqual(order(seed=1, start=8, count=10), full[8:])
        self.assertNotEqual(full[:12], order(seed=2, start=0, count=12))
        self.assertNotEqual(full[:6], full[6:12])

    @parameterized.named_parameters(
        ("missing_folder", "missing", "does not exist"),
        ("no_train", "no_train", "no train/"),
        ("no_test", "no_test", "no test/ or val/"),
        ("no_classes", "no_classes", "has no class folders"),
        ("empty_class", "empty_class", "train/b has no images"),
        ("empty_test_class", "empty_test_class", "test/a has no images"),
        ("classes_differ", "classes_differ", r"only in train: \['b'\]"),
        ("garbage_small", "garbage_small", "cannot decode image file .*2.png"),
        ("garbage_large", "garbage_large", "cannot decode image file .*2.png"),
        ("truncated_jpeg", "truncated_jpeg", "cannot decode .*bad.jpg"),
        ("odd_size", "odd_size", "odd.png is 9x8"),
        # The odd file sorts first: it is still the one named.
        ("odd_first", "odd_first", "train/a/0000.png is 16x16, but 8 of"),
        ("symlink_loop", "symlink_loop", "train/a/loop.png .*symbolic links"),
    )
    def test_bad_folder(self, case, pattern):
        root = os.path.join(self.get_temp_dir(), "bad_" + case)
        if case == "no_train":
            make_folder(root)
            os.rename(os.path.join(root, "train"), os.path.join(root, "t"))
        elif case == "no_test":
            make_folder(root)
            os.rename(os.path.join(root, "test"), os.path.join(root, "t"))
        elif case == "no_classes":
            os.makedirs(os.path.join(root, "train"))
            os.makedirs(os.path.join(root, "test"))
        elif case == "empty_class":
            make_folder(root)
            for name in os.listdir(os.path.join(root, "train", "b")):
                os.remove(os.path.join(root, "train", "b", name))
            # A non-image file does not count as an image.
            with open(os.path.join(root, "train", "b", "notes.txt"), "w") as f:
                f.write("hello")
        elif case == "empty_test_class":
            make_folder(root)
            for name in os.listdir(os.path.join(root, "test", "a")):
                os.remove(os.path.join(root, "test", "a", name))
        elif case == "classes_differ":
            make_folder(root)
            os.rename(
                os.path.join(root, "test", "b"), os.path.join(root, "test", "c")
            )
            pattern = pattern + r".*only in test: \['c'\]"
        elif case.startswith("garbage"):
            size = (8, 8) if case == "garbage_small" else (80, 80)
            make_folder(root, size=size)
            with open(os.path.join(root, "train", "a", "2.png"), "wb") as f:
                f.write(b"this is not a png at all")
        elif case == "truncated_jpeg":
            make_folder(root)
            path = os.path.join(root, "test", "b", "bad.jpg")
            write_image(path, np.full((8, 8, 3), 99, np.uint8), fmt="jpeg")
            with open(path, "rb") as f:
                data = f.read()
            with open(path, "wb") as f:
                f.write(data[: len(data) // 3])
        elif case == "odd_size":
            make_folder(root)
            write_image(
                os.path.join(root, "test", "a", "odd.png"),
                np.ones((8, 9, 3), np.uint8),
            )
        elif case == "odd_first":
            make_folder(root, per_class=(4, 4))
            write_image(
                os.path.join(root, "train", "a", "0000.png"),
                np.ones((16, 16, 3), np.uint8),
            )
        elif case == "symlink_loop":
            make_folder(root)
            loop = os.path.join(root, "train", "a", "loop.png")
            os.symlink(loop, loop)
        with self.assertRaisesRegex(DataError, "^spec='folder:") as cm:
            load_source(f"folder:{root}")
        message = str(cm.exception)
        self.assertNotIn("--", message)
        self.assertRegex(message, pattern)
        self.assertNotIn("\n", message)

    def test_streaming_decode_error_names_the_file(self):
        # Beyond MAX_HEADER_CHECKS files the check happens at decode time.
        ds = tf.data.Dataset.from_tensor_slices(
            ([b"junk bytes"], ["x/bad.png"])
        ).map(folder_source.decode_image)
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "bad.png"):
            list(ds)

    @parameterized.named_parameters(
        ("empty", ""),
        ("unknown_kind", "imagenet"),
        ("tfds_no_name", "tfds:"),
        ("folder_no_path", "folder:"),
        ("synthetic_arg", "synthetic:3"),
    )
    def test_bad_spec(self, spec):
        with self.assertRaisesRegex(DataError, f"^spec={spec!r}") as cm:
            load_source(spec)
        self.assertNotIn("\n", str(cm.exception))
        self.assertNotIn("--", str(cm.exception))

    @parameterized.named_parameters(
        ("train", "train", 5000), ("test", "test", 1000)
    )
    def test_cifar10_small_folder(self, split, count):
        if not os.path.isdir(CIFAR10_SMALL):
            self.skipTest(f"{CIFAR10_SMALL} is absent")
        source = load_source(f"folder:{CIFAR10_SMALL}")
        info = source.info
        self.assertEqual(info.num_classes, 10)
        self.assertEqual(info.class_names[0], "airplane")
        self.assertEqual(info.class_names[9], "truck")
        self.assertEqual(info.image_shape, (32, 32, 3))
        self.assertEqual(info.recipe, "cifar")
        images, labels = source.arrays(split)
        self.assertEqual(images.shape, (count, 32, 32, 3))
        np.testing.assert_array_equal(
            np.bincount(labels), np.full(10, count // 10)
        )
        # Channel statistics of real CIFAR photos.
        np.testing.assert_allclose(info.mean, base.CIFAR_MEAN, atol=0.02)
        np.testing.assert_allclose(info.std, (0.247, 0.243, 0.261), atol=0.02)


class SyntheticSourceTest(tf.test.TestCase):
    def test_info_and_arrays(self):
        source = load_source(
            "synthetic", synthetic_train_size=40, synthetic_test_size=12, seed=5
        )
        info = source.info
        self.assertTrue(source.in_memory)
        self.assertEqual(info.name, "synthetic")
        self.assertEqual(info.image_shape, (32, 32, 3))
        self.assertEqual((info.num_train, info.num_test), (40, 12))
        self.assertEqual(info.num_classes, 10)
        self.assertLen(info.class_names, 10)
        images, labels = source.arrays("train")
        self.assertEqual(images.shape, (40, 32, 32, 3))
        np.testing.assert_allclose(
            info.mean, images.mean((0, 1, 2)) / 255.0, atol=1e-6
        )
        self.assertEqual(source.arrays("test")[0].shape, (12, 32, 32, 3))
        other = load_source(
            "synthetic", synthetic_train_size=40, synthetic_test_size=12, seed=6
        )
        self.assertFalse(np.array_equal(images, other.arrays("train")[0]))

    def test_bad_size(self):
        for name in ("synthetic_train_size", "synthetic_test_size"):
            with self.assertRaisesRegex(
                DataError, f"^{name}=0: must be >= 1.$"
            ):
                load_source("synthetic", **{name: 0})

    def test_array_stream(self):
        source = load_source(
            "synthetic", synthetic_train_size=7, synthetic_test_size=3
        )
        labels = source.arrays("train")[1]
        images = source.arrays("train")[0]
        firsts = {tuple(images[i, 0, 0]): i for i in range(7)}
        full = [
            firsts[tuple(x.numpy()[0, 0])]
            for x, _ in source.stream("train", seed=3).take(21)
        ]
        for epoch in range(3):
            self.assertCountEqual(full[7 * epoch : 7 * epoch + 7], range(7))
        tail = [
            (firsts[tuple(x.numpy()[0, 0])], int(y))
            for x, y in source.stream("train", seed=3, start=9).take(12)
        ]
        self.assertEqual(tail, [(i, labels[i]) for i in full[9:]])


class TfgraftTinyImages(tfds.core.GeneratorBasedBuilder):
    """16x16 images, 3 classes: small enough to be loaded into memory."""

    # No checksums file to look up for a builder defined in a test; the
    # lookup would also need the optional importlib_resources package.
    code_path = None
    VERSION = tfds.core.Version("1.0.0")
    NUM_TRAIN = 30
    NUM_TEST = 9

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(16, 16, 3)),
                    "label": tfds.features.ClassLabel(names=["x", "y", "z"]),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {
            "train": self._generate_examples(self.NUM_TRAIN, 0),
            "test": self._generate_examples(self.NUM_TEST, 1),
        }

    def _generate_examples(self, count, seed):
        for i in range(count):
            yield i, {"image": self.make_image(i, seed), "label": i % 3}

    @staticmethod
    def make_image(index, seed):
        rng = np.random.default_rng([index, seed])
        return rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)


class TfgraftTinyPhotos(tfds.core.GeneratorBasedBuilder):
    """Variable-size 70-90 px images, 12 classes, one per train image."""

    # No checksums file to look up for a builder defined in a test; the
    # lookup would also need the optional importlib_resources package.
    code_path = None
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3)),
                    "label": tfds.features.ClassLabel(num_classes=12),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {
            "train": self._generate_examples(12, 0),
            "validation": self._generate_examples(5, 1),
        }

    def _generate_examples(self, count, seed):
        rng = np.random.default_rng(seed)
        for i in range(count):
            shape = (70 + i, 90 - i, 3)
            image = rng.integers(0, 256, shape, dtype=np.uint8)
            yield i, {"image": image, "label": i}


class TfdsSourceTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.data_dir = tempfile.mkdtemp(prefix="tfgraft_tfds_")
        tfds.disable_progress_bar()
        TfgraftTinyImages(data_dir=cls.data_dir).download_and_prepare()
        TfgraftTinyPhotos(data_dir=cls.data_dir).download_and_prepare()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.data_dir, ignore_errors=True)
        super().tearDownClass()

    def test_small_dataset_in_memory(self):
        source = load_source("tfds:tfgraft_tiny_images", data_dir=self.data_dir)
        info = source.info
        self.assertTrue(source.in_memory)
        self.assertEqual(info.name, "tfds:tfgraft_tiny_images")
        self.assertEqual(info.image_shape, (16, 16, 3))
        self.assertEqual((info.num_train, info.num_test), (30, 9))
        self.assertEqual(info.class_names, ("x", "y", "z"))
        self.assertEqual(info.recipe, "cifar")
        images, labels = source.arrays("test")
        self.assertEqual(images.dtype, np.uint8)
        self.assertEqual(labels.dtype, np.int32)
        # Same examples as generated (TFDS shuffles the on-disk order).
        expected = {
            TfgraftTinyImages.make_image(i, 1).tobytes(): i % 3
            for i in range(9)
        }
        got = {img.tobytes(): int(lab) for img, lab in zip(images, labels)}
        self.assertEqual(got, expected)
        train = source.arrays("train")[0]
        np.testing.assert_allclose(
            info.mean, train.mean((0, 1, 2)) / 255.0, atol=1e-6
        )

    def test_large_dataset_streams(self):
        source = load_source("tfds:tfgraft_tiny_photos", data_dir=self.data_dir)
        info = source.info
        self.assertFalse(source.in_memory)
        self.assertEqual(info.recipe, "imagenet")
        self.assertEqual(info.image_shape, (224, 224, 3))
        self.assertEqual(info.num_test, 5)  # from the validation split
        test = list(source.dataset("test"))
        self.assertLen(test, 5)
        self.assertEqual(test[0][0].dtype, tf.uint8)
        self.assertEqual(test[0][1].dtype, tf.int32)
        sizes = {tuple(x.shape) for x, _ in test}
        self.assertLen(sizes, 5)  # native, varying sizes

        def labels(seed, start, count):
            ds = source.stream("train", seed=seed, start=start).take(count)
            return [int(y) for _, y in ds]

        full = labels(seed=4, start=0, count=36)
        for epoch in range(3):
            self.assertCountEqual(full[12 * epoch : 12 * epoch + 12], range(12))
        self.assertEqual(labels(seed=4, start=15, count=21), full[15:])
        self.assertNotEqual(labels(seed=5, start=0, count=24), full[:24])

    def test_unknown_name(self):
        with self.assertRaisesRegex(DataError, "^spec='tfds:cifr10'") as cm:
            load_source("tfds:cifr10", data_dir=self.data_dir)
        self.assertIn("cifar10", str(cm.exception))
        self.assertNotIn("\n", str(cm.exception))

    def test_not_prepared(self):
        empty = self.get_temp_dir() + "/empty_tfds"
        with self.assertRaisesRegex(DataError, f"data_dir='{empty}'") as cm:
            load_source("tfds:mnist", data_dir=empty)
        self.assertIn("not prepared", str(cm.exception))
        self.assertIn("pass data_dir=DIR.", str(cm.exception))
        self.assertNotIn("\n", str(cm.exception))


if __name__ == "__main__":
    tf.test.main()
