"""EKG's knowledge fine-tuning under plain Keras `fit` (METHODS §3.4).

`KnowledgeModel(student)` wraps the compact network `search_subnet`
returns so that `model.fit` trains it on `knowledge_dataset` batches with
the loss the job's `KnowledgeTrainer` computes. Save the student
(`knowledge_model.student`), not the wrapper.
"""

import keras
import tensorflow as tf

from tfgraft.ekg import data as ekg_data
from tfgraft.ekg import distill
from tfgraft.ekg import errors


class KnowledgeModel(keras.Model):
    """Trains `student` with EKG's knowledge loss under `model.fit`.

    Compile with the optimizer only: the loss is fixed, the metrics are
    `loss` and `accuracy` (averaged over the views). `evaluate`/`predict`
    take plain `(images, labels)` batches (plain CE).

    Args:
        student: the compact network (raw images -> logits), e.g.
            `search_subnet(...).model`.
        temperature: KD temperature `T` (the reference: 4 on CIFAR).
        **kwargs: `keras.Model` keyword arguments (`name`).

    Call arguments:
        images: `[B, V, H, W, 3]` views (view-major logits `[V * B,
            classes]` come out) or plain `[B, H, W, 3]` images.

    Example:

    >>> inputs = keras.Input((8, 8, 3))
    >>> x = keras.layers.GlobalAveragePooling2D()(inputs)
    >>> wrapper = KnowledgeModel(keras.Model(inputs, keras.layers.Dense(5)(x)))
    >>> tuple(wrapper(tf.zeros((2, 2, 8, 8, 3))).shape)
    (4, 5)
    """

    def __init__(self, student, temperature=4.0, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(student, keras.Model):
            raise errors.EKGError(
                "student must be a keras.Model. Received: "
                f"student={type(student).__name__}"
            )
        if not temperature > 0:
            raise errors.EKGError(
                f"temperature must be > 0. Received: temperature={temperature}"
            )
        self.student = student
        self.temperature = float(temperature)
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")

    def compile(self, optimizer="rmsprop", **kwargs):
        for arg in ("loss", "metrics", "weighted_metrics", "loss_weights"):
            if kwargs.get(arg) is not None:
                raise errors.EKGError(
                    f"KnowledgeModel.compile: {arg} is fixed (EKG's knowledge "
                    f"loss, accuracy over the views); do not pass {arg}"
                )
        super().compile(optimizer=optimizer, **kwargs)

    def call(self, images, training=None):
        if len(images.shape) == 5:
            images = distill.view_major(images)  # one forward pass
        return self.student(images, training=training)

    def _split(self, y):
        """`(int32 labels [B], knowledge or None)` of a batch's targets."""
        knowledge = None
        if isinstance(y, (tuple, list)):
            y, knowledge = y[0], y[1]
        return tf.cast(tf.reshape(y, [-1]), tf.int32), knowledge

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        del x, sample_weight, training
        labels, knowledge = self._split(y)
        logits = tf.cast(y_pred, tf.float32)
        batch = tf.shape(labels)[0]
        views = tf.reshape(logits, [-1, batch, tf.shape(logits)[-1]])
        count = tf.cast(tf.shape(views)[0] * batch, tf.float32)
        if knowledge is None:
            tiled = tf.tile(labels, [tf.shape(views)[0]])
            total = tf.reduce_sum(
                tf.nn.sparse_softmax_cross_entropy_with_logits(tiled, logits)
            )
        else:
            total, _, _ = distill.knowledge_loss(
                views, labels, knowledge, self.temperature
            )
        # Keras sums replica gradients: scale to the global batch.
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        return total / (count * replicas)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        del x, sample_weight
        labels, _ = self._split(y)
        self.accuracy_tracker.update_state(distill.view_hits(y_pred, labels))
        return {m.name: m.result() for m in self.metrics}

    @property
    def metrics(self):
        return [self._loss_tracker, self.accuracy_tracker]


def knowledge_dataset(
    images,
    labels,
    knowledge,
    *,
    batch_size,
    seed=0,
    views=2,
    jitter=True,
):
    """The endless fine-tuning stream for `KnowledgeModel.fit`.

    EKG's augmentation (`tfgraft.ekg.data.ekg_augment`: colour jitter,
    flip, reflect-pad 4, crop) on `views` views of every image, each row's
    teacher logits next to its label; shuffled per epoch, remainder
    dropped, a pure function of `seed` (the job's stream). Pass
    `steps_per_epoch=len(labels) // batch_size` to `fit`.

    Args:
        images: uint8 or float `[N, H, W, 3]` on the 0-255 scale, the
            `train_data` images given to `search_subnet` (same order).
        labels: int `[N]`.
        knowledge: `[N, classes, T]` (`SubnetResult.knowledge`).
        batch_size: images per batch.
        seed: stream seed.
        views: views per image (EKG: 2).
        jitter: colour jitter (EKG's knowledge recipe uses it).

    Returns:
        A `tf.data.Dataset` of `(views[B, V, H, W, 3], (labels[B],
        knowledge[B, classes, T]))`.
    """
    return ekg_data.array_dataset(
        images,
        labels,
        batch_size=batch_size,
        seed=seed,
        views=views,
        jitter=jitter,
        knowledge=knowledge,
        stack_views=True,
    )
