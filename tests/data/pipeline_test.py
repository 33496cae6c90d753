"""Tests for tfgraft.data.pipeline: train/eval streams, resume, recipes."""

import os

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tfgraft.config import DataConfig
from tfgraft.data import DataError
from tfgraft.data import DatasetInfo
from tfgraft.data import eval_dataset
from tfgraft.data import load_source
from tfgraft.data import pipeline
from tfgraft.data import sources
from tfgraft.data import steps_per_epoch
from tfgraft.data import train_dataset


def array_source(images, labels, test=None, num_classes=None, recipe="cifar"):
    """An in-memory source over the given arrays (test defaults to train)."""
    images = np.asarray(images, np.uint8)
    labels = np.asarray(labels, np.int32)
    test = test or (images, labels)
    num_classes = num_classes or int(labels.max()) + 1
    info = DatasetInfo(
        name="arrays",
        num_classes=num_classes,
        image_shape=images.shape[1:],
        num_train=len(labels),
        num_test=len(test[1]),
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        recipe=recipe,
        class_names=tuple(str(i) for i in range(num_classes)),
    )
    return sources.ArraySource(info, {"train": (images, labels), "test": test})


def constant_images(num, size=8):
    """Image i is filled with 10 * i + 5, label i: content names the label."""
    values = 10 * np.arange(num) + 5
    images = np.broadcast_to(
        values[:, None, None, None], (num, size, size, 3)
    ).astype(np.uint8)
    return images, np.arange(num, dtype=np.int32)


def take(ds, count):
    return [(x.numpy(), y.numpy()) for x, y in ds.take(count)]


def make_folder(root, size, per_class=(4, 2), classes=("a", "b")):
    rng = np.random.default_rng(1)
    for split, count in zip(("train", "test"), per_class):
        for cls in classes:
            for i in range(count):
                path = os.path.join(root, split, cls, f"{i}.png")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                image = rng.integers(0, 256, size + (3,), dtype=np.uint8)
                tf.io.write_file(path, tf.io.encode_png(image))


class TrainDatasetTest(tf.test.TestCase, parameterized.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.synthetic = load_source(
            "synthetic", synthetic_train_size=100, synthetic_test_size=10
        )

    def test_shapes_dtypes_ranges(self):
        images, labels = take(
            train_dataset(self.synthetic, batch_size=16, seed=0), 1
        )[0]
        self.assertEqual(images.shape, (16, 32, 32, 3))
        self.assertEqual(images.dtype, np.float32)
        self.assertEqual(labels.shape, (16,))
        self.assertEqual(labels.dtype, np.int32)
        self.assertGreaterEqual(images.min(), 0.0)
        self.assertLessEqual(images.max(), 255.0)
        self.assertGreater(images.max(), 200.0)  # 0-255 scale, not 0-1
        np.testing.assert_array_equal(images, np.round(images))
        self.assertTrue(np.all((labels >= 0) & (labels < 10)))

    def test_infinite_and_epochs_are_permutations(self):
        images, labels = constant_images(10)
        source = array_source(images, labels)
        self.assertEqual(steps_per_epoch(source, 3), 3)
        batches = take(
            train_dataset(
                source, batch_size=3, seed=0, augment=DataConfig(augment="none")
            ),
            12,
        )
        seen = np.concatenate([y for _, y in batches]).reshape(4, 9)
        for epoch in seen:  # 9 distinct of the 10 images per epoch
            self.assertLen(set(epoch.tolist()), 9)
        self.assertFalse(np.array_equal(seen[0], seen[1]))
        # Images stay aligned with their labels.
        for x, y in batches:
            np.testing.assert_array_equal(
                x[:, 0, 0, 0], 10.0 * y.astype(np.float32) + 5
            )

    def test_each_step_has_its_own_augmentation(self):
        # 16 copies of one image, one step per epoch: batches differ only
        # by their augmentation.
        image = np.random.default_rng(0).integers(1, 255, (12, 12, 3))
        images = np.repeat(image[None], 16, axis=0).astype(np.uint8)
        source = array_source(images, np.arange(16))
        batches = take(train_dataset(source, batch_size=16, seed=0), 3)
        self.assertGreater(np.abs(batches[0][0] - batches[1][0]).mean(), 10)
        self.assertGreater(np.abs(batches[1][0] - batches[2][0]).mean(), 10)

    def test_same_seed_same_stream(self):
        a = take(train_dataset(self.synthetic, batch_size=8, seed=3), 4)
        b = take(train_dataset(self.synthetic, batch_size=8, seed=3), 4)
        for (xa, ya), (xb, yb) in zip(a, b):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)

    def test_different_seeds_differ(self):
        a = take(train_dataset(self.synthetic, batch_size=8, seed=3), 2)
        b = take(train_dataset(self.synthetic, batch_size=8, seed=4), 2)
        self.assertFalse(np.array_equal(a[0][1], b[0][1]))
        self.assertFalse(np.array_equal(a[1][0], b[1][0]))
        # Same order, different augmentation: different pixels.
        images, labels = constant_images(16)
        noise = np.random.default_rng(0).integers(1, 255, images.shape)
        source = array_source(noise.astype(np.uint8), labels)
        x0 = take(train_dataset(source, batch_size=16, seed=0), 1)[0][0]
        x1 = take(train_dataset(source, batch_size=16, seed=1), 1)[0][0]
        self.assertGreater(np.abs(x0 - x1).mean(), 10.0)

    @parameterized.named_parameters(
        ("mid_epoch", 7),
        ("epoch_boundary", 12),
        ("later_epoch", 27),
    )
    def test_start_step_resumes_in_memory(self, start):
        # 100 images / batch 8 = 12 steps per epoch.
        config = DataConfig(mixup_alpha=0.4, cutmix_alpha=1.0)
        full = take(
            train_dataset(self.synthetic, batch_size=8, seed=9, augment=config),
            start + 3,
        )
        resumed = take(
            train_dataset(
                self.synthetic,
                batch_size=8,
                seed=9,
                start_step=start,
                augment=config,
            ),
            3,
        )
        for (xa, ya), (xb, yb) in zip(full[start:], resumed):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)

    def test_start_step_resumes_streaming(self):
        root = self.get_temp_dir() + "/stream_resume"
        make_folder(root, size=(90, 70), per_class=(5, 1))
        source = load_source(f"folder:{root}")
        self.assertFalse(source.in_memory)
        # 10 images / batch 4 = 2 steps per epoch, 2 images dropped.
        full = take(train_dataset(source, batch_size=4, seed=2), 5)
        resumed = take(
            train_dataset(source, batch_size=4, seed=2, start_step=3), 2
        )
        for (xa, ya), (xb, yb) in zip(full[3:], resumed):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
        other = take(train_dataset(source, batch_size=4, seed=3), 1)
        self.assertGreater(np.abs(other[0][0] - full[0][0]).mean(), 5.0)

    def test_randaugment_is_deterministic_and_resumable(self):
        config = DataConfig(randaugment=True)
        full = take(
            train_dataset(
                self.synthetic,
                batch_size=4,
                seed=1,
                augment=config,
                randaugment_magnitude=0.6,
            ),
            4,
        )
        resumed = take(
            train_dataset(
                self.synthetic,
                batch_size=4,
                seed=1,
                start_step=2,
                augment=config,
                randaugment_magnitude=0.6,
            ),
            2,
        )
        for (xa, _), (xb, _) in zip(full[2:], resumed):
            np.testing.assert_array_equal(xa, xb)
        plain = take(train_dataset(self.synthetic, batch_size=4, seed=1), 4)
        self.assertGreater(np.abs(full[3][0] - plain[3][0]).mean(), 1.0)
        self.assertGreaterEqual(full[3][0].min(), 0.0)
        self.assertLessEqual(full[3][0].max(), 255.0)

    def test_cifar_crop_flip_is_shifted_flipped_copy(self):
        image = np.random.default_rng(0).integers(1, 256, (32, 32, 3))
        images = np.repeat(image[None].astype(np.uint8), 64, axis=0)
        source = array_source(images, np.zeros(64, np.int32))
        out = take(train_dataset(source, batch_size=64, seed=5), 1)[0][0]
        padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
        candidates = {}
        for dy in range(9):
            for dx in range(9):
                crop = padded[dy : dy + 32, dx : dx + 32]
                candidates[(dy, dx, False)] = crop
                candidates[(dy, dx, True)] = crop[:, ::-1]
        found = []
        for augmented in out:
            matches = [
                key
                for key, crop in candidates.items()
                if np.array_equal(augmented, crop)
            ]
            self.assertLen(matches, 1)
            found.append(matches[0])
        flips = sum(key[2] for key in found)
        self.assertBetween(flips, 16, 48)
        self.assertGreater(len({key[:2] for key in found}), 20)

    @parameterized.named_parameters(
        ("cifar", "cifar"), ("imagenet", "imagenet")
    )
    def test_noflip_keeps_crops_and_never_mirrors(self, recipe):
        # Same stream with and without flip: images equal, or the flipped
        # one mirrored; so flip=False changes nothing but the flip.
        image = np.random.default_rng(1).integers(1, 256, (16, 16, 3))
        images = np.repeat(image[None].astype(np.uint8), 32, axis=0)
        source = array_source(images, np.zeros(32, np.int32))

        def batch(flip):
            config = DataConfig(augment=recipe, flip=flip)
            ds = train_dataset(source, batch_size=32, seed=7, augment=config)
            return take(ds, 1)[0][0]

        with_flip, without_flip = batch(True), batch(False)
        mirrored = 0
        for a, b in zip(with_flip, without_flip):
            if not np.array_equal(a, b):
                np.testing.assert_allclose(a[:, ::-1], b, atol=1e-4)
                mirrored += 1
        self.assertBetween(mirrored, 4, 28)

    def test_imagenet_recipe_on_arrays_keeps_size(self):
        out = take(
            train_dataset(
                self.synthetic,
                batch_size=8,
                seed=0,
                augment=DataConfig(augment="imagenet"),
            ),
            1,
        )[0][0]
        self.assertEqual(out.shape, (8, 32, 32, 3))
        self.assertGreaterEqual(out.min(), 0.0)
        self.assertLessEqual(out.max(), 255.0)

    def test_imagenet_recipe_from_folder(self):
        root = self.get_temp_dir() + "/imagenet_like"
        # 300 wide, 260 high.
        make_folder(root, size=(260, 300), per_class=(2, 2))
        source = load_source(f"folder:{root}")
        self.assertEqual(source.info.recipe, "imagenet")
        images, labels = take(train_dataset(source, batch_size=2, seed=0), 1)[0]
        self.assertEqual(images.shape, (2, 224, 224, 3))
        self.assertEqual(labels.dtype, np.int32)
        self.assertGreaterEqual(images.min(), 0.0)
        self.assertLessEqual(images.max(), 255.0)
        batches = take(eval_dataset(source, batch_size=3), 5)
        self.assertEqual(
            [x.shape for x, _ in batches], [(3, 224, 224, 3), (1, 224, 224, 3)]
        )
        np.testing.assert_array_equal(
            np.concatenate([y for _, y in batches]), [0, 0, 1, 1]
        )

    def test_mixup_labels_are_mixes(self):
        images, labels = constant_images(10)
        source = array_source(images, labels)
        config = DataConfig(augment="none", mixup_alpha=0.5)
        x, y = take(
            train_dataset(source, batch_size=10, seed=0, augment=config), 1
        )[0]
        self.assertEqual(y.shape, (10, 10))
        self.assertEqual(y.dtype, np.float32)
        np.testing.assert_allclose(y.sum(1), np.ones(10), atol=1e-6)
        self.assertTrue(np.all(y >= 0.0))
        self.assertTrue(np.all((y > 1e-6).sum(1) <= 2))
        # Every image is the label-weighted mix of the two source images.
        values = 10.0 * np.arange(10) + 5
        np.testing.assert_allclose(x[:, 0, 0, 0], y @ values, rtol=1e-5)
        np.testing.assert_allclose(x.std(axis=(1, 2, 3)), 0.0, atol=1e-3)
        self.assertGreater(np.sum(y.max(1) < 0.99), 0)

    def test_cutmix_labels_match_pasted_area(self):
        images, labels = constant_images(10)
        source = array_source(images, labels)
        config = DataConfig(augment="none", cutmix_alpha=1.0)
        x, y = take(
            train_dataset(source, batch_size=10, seed=1, augment=config), 1
        )[0]
        np.testing.assert_allclose(y.sum(1), np.ones(10), atol=1e-6)
        own = np.argmax(y, axis=1)
        for i in range(10):
            pixels = x[i, :, :, 0]
            own_value = 10.0 * own[i] + 5
            kept = np.mean(pixels == own_value)
            if y[i].max() < 1.0:
                np.testing.assert_allclose(y[i, own[i]], kept, atol=1e-6)
        self.assertLess(y.max(1).min(), 0.99)


class EvalDatasetTest(tf.test.TestCase):
    def test_fixed_order_and_partial_batch(self):
        source = load_source(
            "synthetic", synthetic_train_size=20, synthetic_test_size=10
        )
        batches = take(eval_dataset(source, batch_size=4), 10)
        self.assertEqual([len(y) for _, y in batches], [4, 4, 2])
        images, labels = source.arrays("test")
        np.testing.assert_array_equal(
            np.concatenate([x for x, _ in batches]), images.astype(np.float32)
        )
        np.testing.assert_array_equal(
            np.concatenate([y for _, y in batches]), labels
        )
        self.assertEqual(batches[0][0].dtype, np.float32)
        self.assertEqual(batches[0][1].dtype, np.int32)
        train = take(eval_dataset(source, batch_size=8, split="train"), 5)
        self.assertEqual([len(y) for _, y in train], [8, 8, 4])

    def test_imagenet_eval_is_resize_256_center_crop_224(self):
        root = self.get_temp_dir() + "/eval_crop"
        os.makedirs(root + "/train/a")
        os.makedirs(root + "/test/a")
        # 300 wide, 260 high; dark left half, bright right half.
        image = np.zeros((260, 300, 3), np.uint8)
        image[:, 150:] = 250
        for split in ("train", "test"):
            tf.io.write_file(f"{root}/{split}/a/0.png", tf.io.encode_png(image))
        source = load_source(f"folder:{root}")
        ((x, _),) = take(eval_dataset(source, batch_size=1), 1)
        self.assertEqual(x.shape, (1, 224, 224, 3))
        # Resize to 256x295; the edge moves to x = 147.5, then the crop
        # starts at round(71 / 2) = 36: the edge lands at 111.5.
        row = x[0, 100, :, 0]
        self.assertTrue(np.all(row[:110] < 1.0))
        self.assertTrue(np.all(row[113:] > 249.0))
        self.assertBetween(row[111], 60.0, 190.0)


class StepsPerEpochTest(tf.test.TestCase):
    def test_steps(self):
        source = load_source(
            "synthetic", synthetic_train_size=50, synthetic_test_size=5
        )
        self.assertEqual(steps_per_epoch(source, 16), 3)
        self.assertEqual(steps_per_epoch(source.info, 50), 1)
        for bad in (0, 51):
            with self.assertRaisesRegex(DataError, f"^batch_size={bad}"):
                steps_per_epoch(source, bad)
        with self.assertRaisesRegex(DataError, "^batch_size=64 is larger"):
            train_dataset(source, batch_size=64, seed=0)
        with self.assertRaisesRegex(DataError, "^batch_size=0: must be"):
            eval_dataset(source, batch_size=0)

    def test_bad_augment_config(self):
        with self.assertRaisesRegex(ValueError, "--augment=autoaugment"):
            DataConfig(augment="autoaugment")
        with self.assertRaisesRegex(ValueError, "--mixup_alpha"):
            DataConfig(mixup_alpha=-1.0)


class IndexBatchesTest(tf.test.TestCase):
    def test_epochs_are_permutations_and_resume_skips(self):
        ds = pipeline.index_batches(10, 3, seed=4)
        rows = [(int(s), i.numpy()) for s, i in ds.take(9)]
        self.assertEqual([s for s, _ in rows], list(range(9)))
        for epoch in range(3):
            chosen = np.concatenate(
                [i for _, i in rows[3 * epoch : 3 * epoch + 3]]
            )
            # 3 full batches of 3 from 10 examples, no repeats in an epoch.
            self.assertLen(set(chosen.tolist()), 9)
            self.assertTrue(set(chosen.tolist()) <= set(range(10)))
        self.assertNotAllEqual(rows[0][1], rows[3][1])
        resumed = [
            (int(s), i.numpy())
            for s, i in pipeline.index_batches(
                10, 3, seed=4, start_step=4
            ).take(5)
        ]
        for (s0, i0), (s1, i1) in zip(rows[4:], resumed):
            self.assertEqual(s0, s1)
            self.assertAllEqual(i0, i1)
        other = next(iter(pipeline.index_batches(10, 3, seed=4, tag=7)))[1]
        self.assertNotAllEqual(other.numpy(), rows[0][1])

    def test_batch_larger_than_data(self):
        with self.assertRaisesRegex(ValueError, "batch_size=11"):
            pipeline.index_batches(10, 11, seed=0)


if __name__ == "__main__":
    tf.test.main()
