"""Tests for the procedural shapes set (tfgraft.data.synthetic)."""


import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tfgraft.data import synthetic


class SyntheticTest(tf.test.TestCase, parameterized.TestCase):
    def test_shapes_dtypes_and_balance(self):
        images, labels = synthetic.generate(105, seed=3)
        self.assertEqual(images.shape, (105, 32, 32, 3))
        self.assertEqual(images.dtype, np.uint8)
        self.assertEqual(labels.dtype, np.int32)
        counts = np.bincount(labels, minlength=10)
        self.assertEqual(counts.min(), 10)
        self.assertEqual(counts.max(), 11)
        # Real images: not blank, use most of the 0-255 range.
        self.assertGreater(images.std(), 40.0)
        self.assertLess(images.min(), 30)
        self.assertGreater(images.max(), 225)

    def test_same_seed_same_images(self):
        a_images, a_labels = synthetic.generate(50, seed=7)
        b_images, b_labels = synthetic.generate(50, seed=7)
        np.testing.assert_array_equal(a_images, b_images)
        np.testing.assert_array_equal(a_labels, b_labels)

    @parameterized.named_parameters(
        ("other_seed", 8, "train"),
        ("test_split", 7, "test"),
    )
    def test_different_stream_different_images(self, seed, split):
        a_images, _ = synthetic.generate(50, seed=7)
        b_images, _ = synthetic.generate(50, seed=seed, split=split)
        diff = np.abs(a_images.astype(int) - b_images.astype(int)).mean()
        self.assertGreater(diff, 30.0)

    def test_colour_does_not_give_the_class(self):
        images, labels = synthetic.generate(2000, seed=0)
        mean_colour = images.reshape(2000, -1, 3).mean(1)
        # Every class spans nearly the whole colour range.
        for cls in range(10):
            spread = mean_colour[labels == cls].std(0)
            self.assertTrue(np.all(spread > 25.0), (cls, spread))

    def test_tiny_convnet_learns_it(self):
        keras.utils.set_random_seed(0)
        images, labels = synthetic.generate(1000, seed=0)
        test_images, test_labels = synthetic.generate(300, seed=0, split="test")
        model = keras.Sequential(
            [
                keras.Input((32, 32, 3)),
                keras.layers.Rescaling(1 / 127.5, -1.0),
                keras.layers.Conv2D(16, 3, activation="relu"),
                keras.layers.MaxPooling2D(),
                keras.layers.Conv2D(32, 3, activation="relu"),
                keras.layers.MaxPooling2D(),
                keras.layers.Conv2D(32, 3, activation="relu"),
                keras.layers.GlobalMaxPooling2D(),
                keras.layers.Dense(10),
            ]
        )
        model.compile(
            keras.optimizers.Adam(3e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        model.fit(images, labels, batch_size=50, epochs=5, verbose=0)
        _, accuracy = model.evaluate(test_images, test_labels, verbose=0)
        # Chance is 0.1; 100 steps typically reach 0.6-0.8.
        self.assertGreater(accuracy, 0.4)

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "split"):
            synthetic.generate(4, seed=0, split="val")
        with self.assertRaisesRegex(ValueError, "num_images"):
            synthetic.generate(-1, seed=0)


if __name__ == "__main__":
    tf.test.main()
