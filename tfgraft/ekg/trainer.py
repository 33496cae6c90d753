"""KnowledgeTrainer: fine-tuning with EKG's two-view knowledge curriculum."""

import tensorflow as tf

from tfgraft.ekg import distill
from tfgraft.training import trainer as trainer_lib


class KnowledgeTrainer(trainer_lib.Trainer):
    """A `Trainer` whose nets learn from two views and cached teachers.

    Batches are `(images[B, V, H, W, 3], (labels[B], knowledge[B, classes,
    T]))` from `tfgraft.ekg.data.train_dataset(views=2, knowledge=...)`. The
    `forward` hook runs the net once on the `V * B` view-major images and
    `compute_loss` applies `distill.knowledge_loss`: the summed CE + KL_T
    over views and images divided by `V * global_batch_size`, i.e. the
    reference's per-view mean with gradients halved over the two views.
    Train accuracy is averaged over the views (`count_correct`). Teacher
    selection uses each replica's share of the batch (identical to the
    reference on one device).

    Args:
        *args: `Trainer` arguments.
        temperature: KD temperature `T` (4 for CIFAR in the reference).
        **kwargs: `Trainer` keyword arguments.
    """

    def __init__(self, *args, temperature=4.0, **kwargs):
        if temperature <= 0:
            raise ValueError(
                "KnowledgeTrainer temperature must be > 0. "
                f"Received: temperature={temperature}"
            )
        self.temperature = float(temperature)
        super().__init__(*args, **kwargs)

    def compute_loss(self, net_index, logits, labels, images):
        del net_index, images
        labels, knowledge = labels
        views = tf.reshape(
            tf.cast(logits, tf.float32),
            [-1, tf.shape(labels)[0], tf.shape(logits)[-1]],
        )
        total, _, _ = distill.knowledge_loss(
            views, labels, knowledge, self.temperature
        )
        num_views = tf.cast(tf.shape(views)[0], tf.float32)
        return total / (num_views * self.global_batch_size)

    def forward(self, net_index, images):
        # One forward pass for all views, inside the tape (and XLA with
        # `jit`).
        return self.nets[net_index](distill.view_major(images), training=True)

    def count_correct(self, net_index, logits, labels):
        # Correct predictions averaged over the views (logits view-major).
        del net_index
        labels = tf.cast(labels[0], tf.int32)
        num_views = tf.shape(logits)[0] // tf.shape(labels)[0]
        correct = tf.reduce_sum(distill.view_hits(logits, labels))
        return correct / tf.cast(num_views, tf.float32)
