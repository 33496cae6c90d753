"""Tests for the stateless augmentation ops in tfgraft.data.augment."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tfgraft.data import augment


def seed(a, b=0):
    return tf.constant([a, b], tf.int64)


class RandomResizedCropTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("landscape", 260, 300),
        ("portrait", 500, 375),
        ("square", 32, 32),
    )
    def test_boxes_follow_torchvision_rules(self, height, width):
        n = 4000
        top, left, crop_h, crop_w = (
            v.numpy()
            for v in augment.random_resized_crop_boxes(
                tf.fill([n], height), tf.fill([n], width), seed(1)
            )
        )
        self.assertTrue(np.all(top >= 0) and np.all(left >= 0))
        self.assertTrue(np.all(top + crop_h <= height))
        self.assertTrue(np.all(left + crop_w <= width))
        self.assertTrue(np.all(crop_h >= 1) and np.all(crop_w >= 1))
        area = crop_h * crop_w / (height * width)
        # Rounding to whole pixels blurs the bounds by a pixel.
        slack = 2.0 * (height + width) / (height * width)
        self.assertGreater(area.min(), 0.08 - slack)
        self.assertLessEqual(area.max(), 1.0)
        ratio = crop_w / crop_h
        self.assertGreater(ratio.min(), 0.75 * (1 - 2.0 / min(crop_h.min(), 8)))
        self.assertLess(ratio.max(), 4 / 3 * (1 + 2.0 / min(crop_w.min(), 8)))
        # Log-uniform ratio and uniform area: the medians are near the
        # middle of their ranges (fitting tries skew large areas slightly).
        self.assertBetween(np.median(np.log(ratio)), -0.05, 0.05)
        self.assertBetween(np.median(area), 0.4, 0.6)
        self.assertGreater(len(set(top.tolist())), 10)

    def test_fallback_is_center_crop_clamped_to_ratio(self):
        # 10 x 1000: a box of >= 8% of the area with ratio <= 4/3 is at
        # least 24 rows high, so every try fails.
        top, left, crop_h, crop_w = (
            v.numpy()
            for v in augment.random_resized_crop_boxes(
                tf.fill([64], 10), tf.fill([64], 1000), seed(2)
            )
        )
        np.testing.assert_array_equal(crop_h, 10)
        np.testing.assert_array_equal(crop_w, 13)  # round(10 * 4 / 3)
        np.testing.assert_array_equal(left, (1000 - 13) // 2)
        np.testing.assert_array_equal(top, 0)

    def test_image_and_batch_versions(self):
        image = tf.random.stateless_uniform(
            [40, 50, 3], seed(3), 0, 255, tf.int32
        )
        out = augment.random_resized_crop_flip_image(image, seed(4), (24, 24))
        self.assertEqual(out.shape, (24, 24, 3))
        self.assertEqual(out.dtype, tf.float32)
        again = augment.random_resized_crop_flip_image(image, seed(4), (24, 24))
        self.assertAllEqual(out, again)
        batch = augment.random_resized_crop_flip(
            tf.stack([image] * 6), seed(5), (16, 16)
        )
        self.assertEqual(batch.shape, (6, 16, 16, 3))
        self.assertAllInRange(batch, 0.0, 255.0)

    def test_constant_image_stays_constant(self):
        image = tf.fill([30, 40, 3], 77)
        out = augment.random_resized_crop_flip_image(image, seed(6), (20, 20))
        self.assertAllClose(out, tf.fill([20, 20, 3], 77.0), atol=1e-3)


class NoFlipTest(tf.test.TestCase, parameterized.TestCase):
    """flip=False keeps every crop and never mirrors (METHODS §4.5)."""

    def _check(self, with_flip, without_flip):
        mirrored = 0
        for a, b in zip(with_flip.numpy(), without_flip.numpy()):
            if np.array_equal(a, b):
                continue
            # A drawn flip: the no-flip image is the flipped one mirrored.
            self.assertAllClose(a[:, ::-1], b, atol=1e-4)
            mirrored += 1
        # The images are not symmetric, so some flips were drawn and undone.
        self.assertBetween(mirrored, 1, len(with_flip) - 1)

    def test_pad_crop(self):
        images = tf.random.stateless_uniform(
            [32, 8, 8, 3], seed(9), 0, 255, tf.int32
        )
        self._check(
            augment.pad_crop_flip(images, seed(10)),
            augment.pad_crop_flip(images, seed(10), flip=False),
        )

    def test_random_resized_crop_batch(self):
        images = tf.random.stateless_uniform(
            [16, 20, 24, 3], seed(11), 0, 255, tf.int32
        )
        self._check(
            augment.random_resized_crop_flip(images, seed(12), (12, 12)),
            augment.random_resized_crop_flip(
                images, seed(12), (12, 12), flip=False
            ),
        )

    def test_random_resized_crop_image(self):
        image = tf.random.stateless_uniform(
            [40, 50, 3], seed(13), 0, 255, tf.int32
        )
        pairs = [
            (
                augment.random_resized_crop_flip_image(image, seed(s), (16, 16)),
                augment.random_resized_crop_flip_image(
                    image, seed(s), (16, 16), flip=False
                ),
            )
            for s in range(16)
        ]
        self._check(
            tf.stack([a for a, _ in pairs]), tf.stack([b for _, b in pairs])
        )


class ResizeCenterCropTest(tf.test.TestCase):
    def test_batch_matches_single_images(self):
        images = tf.random.stateless_uniform(
            [3, 260, 300, 3], seed(7), 0, 255, tf.int32
        )
        batch = augment.resize_center_crop(images, (224, 224))
        self.assertEqual(batch.shape, (3, 224, 224, 3))
        single = augment.resize_center_crop(images[1], (224, 224))
        self.assertAllClose(batch[1], single, atol=1e-3)

    def test_square_image_resize_only(self):
        # 256x256 input: no resize, the centre 224 crop starts at 16.
        image = tf.reshape(tf.range(256 * 256 * 3) % 251, [256, 256, 3])
        out = augment.resize_center_crop(image, (224, 224))
        self.assertAllClose(
            out, tf.cast(image[16:240, 16:240], tf.float32), atol=1e-3
        )


class PadCropFlipTest(tf.test.TestCase):
    def test_non_square_and_zero_fill(self):
        images = tf.fill([32, 6, 10, 3], tf.constant(9, tf.uint8))
        out = augment.pad_crop_flip(images, seed(8)).numpy()
        self.assertEqual(out.shape, (32, 6, 10, 3))
        self.assertTrue(set(np.unique(out).tolist()) <= {0.0, 9.0})
        # Some crops reach into the padding, none is all padding.
        self.assertTrue(np.any(out == 0.0))
        self.assertTrue(np.all(out.max(axis=(1, 2, 3)) == 9.0))


class MixTest(tf.test.TestCase):
    def test_beta_mean_and_spread(self):
        lam = augment._sample_beta(seed(9), 0.4, [20000]).numpy()
        self.assertAllInRange(lam, 0.0, 1.0)
        self.assertAllClose(lam.mean(), 0.5, atol=0.02)
        # Var of Beta(a, a) = 1 / (4 (2a + 1)).
        self.assertAllClose(lam.var(), 1 / (4 * 1.8), atol=0.01)

    def test_cutmix_label_weight_is_pixel_share(self):
        # Half the batch is class 0 (pixels 0), half class 1 (pixels 1).
        images = tf.concat(
            [tf.zeros([500, 16, 16, 1]), tf.ones([500, 16, 16, 1])], 0
        )
        classes = tf.concat(
            [tf.zeros([500], tf.int32), tf.ones([500], tf.int32)], 0
        )
        labels = tf.one_hot(classes, 2)
        mixed_images, mixed = augment.cutmix(images, labels, seed(10), 1.0)
        self.assertAllClose(tf.reduce_sum(mixed, 1), tf.ones([1000]))
        share_of_ones = tf.reduce_mean(mixed_images, axis=[1, 2, 3])
        self.assertAllClose(mixed[:, 1], share_of_ones, atol=1e-6)
        # Beta(1, 1) boxes clipped at the border: some but not most pixels.
        pasted = tf.abs(share_of_ones - tf.cast(classes, tf.float32))
        self.assertBetween(float(tf.reduce_mean(pasted)), 0.1, 0.5)
        self.assertGreater(float(tf.reduce_max(pasted)), 0.5)


if __name__ == "__main__":
    tf.test.main()
