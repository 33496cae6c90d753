"""Mixed precision through the trainer: float32 weights, finite updates."""

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tfgraft import models
from tfgraft.training import optimizers
from tfgraft.training import trainer as trainer_lib


class PrecisionTest(tf.test.TestCase, parameterized.TestCase):
    def tearDown(self):
        keras.mixed_precision.set_global_policy("float32")
        super().tearDown()

    @parameterized.named_parameters(
        ("float16", "mixed_float16"), ("bfloat16", "mixed_bfloat16")
    )
    def test_one_step(self, policy):
        keras.mixed_precision.set_global_policy(policy)
        keras.utils.set_random_seed(0)
        net = models.build_model("resnet20", width_mult=0.25)
        opt = optimizers.TorchSGD(0.1, momentum=0.9, weight_decay=5e-4)
        if policy == "mixed_float16":
            opt = keras.optimizers.LossScaleOptimizer(opt)
        trainer = trainer_lib.Trainer(
            [net], [opt], tf.distribute.get_strategy(), global_batch_size=8
        )
        rng = np.random.default_rng(0)
        images = rng.uniform(0, 255, (8, 32, 32, 3)).astype("float32")
        labels = rng.integers(0, 10, 8).astype("int32")
        ds = tf.data.Dataset.from_tensors((images, labels)).repeat()
        before = [w.numpy().copy() for w in net.trainable_weights]
        stats = trainer.train_loop([iter(ds)], 2)
        self.assertTrue(np.isfinite(stats[0]["loss"]))
        self.assertBetween(stats[0]["loss"], 0.5, 10.0)
        for w, b in zip(net.trainable_weights, before):
            self.assertEqual(w.dtype, "float32")
            self.assertTrue(np.all(np.isfinite(w.numpy())))
        moved = max(
            np.abs(w.numpy() - b).max()
            for w, b in zip(net.trainable_weights, before)
        )
        self.assertGreater(moved, 0.0)
        self.assertNotEqual(net.layers[2].compute_dtype, "float32")


if __name__ == "__main__":
    tf.test.main()
