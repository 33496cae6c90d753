"""Forward-only evaluation: top-1, top-5 and cross-entropy over a dataset.

`evaluate(forward, dataset)` loops over the whole (finite) dataset inside
one `tf.function` and adds each batch's counts into a tensor, so the host
waits once per evaluation, not once per batch; `Trainer.evaluate` does the
same for N nets under a distribution strategy. Every job's stand-alone
evaluation (`train.evaluate`; the stripe, L1 and EKG jobs through
`evaluate_model`) uses it.
"""

import tensorflow as tf


def eval_row(logits, labels):
    """`[top1, top5, summed CE, count]` of one batch (float32 sums).

    Top-5 is top-k with k = min(5, classes). Counts are exact in float32
    up to 2**24 images per evaluation.
    """
    classes = logits.shape[-1]
    k = min(5, classes) if classes else 5
    top1 = tf.reduce_sum(
        tf.cast(tf.math.in_top_k(labels, logits, 1), tf.float32)
    )
    top5 = tf.reduce_sum(
        tf.cast(tf.math.in_top_k(labels, logits, k), tf.float32)
    )
    loss = tf.reduce_sum(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
    )
    count = tf.cast(tf.shape(labels)[0], tf.float32)
    return tf.stack([top1, top5, loss, count])


def evaluate(forward, dataset):
    """Top-1, top-5 and mean cross-entropy of `forward` over `dataset`.

    Args:
        forward: `images -> logits`, traceable (a Keras model call, a
            SavedModel's `serve`).
        dataset: a finite `tf.data.Dataset` of `(images, labels)`, integer
            labels.

    Returns:
        `{"top1", "top5", "loss", "count"}` (fractions, mean CE, images).
    """

    @tf.function
    def run(ds):
        totals = tf.zeros([4], tf.float32)
        for images, labels in ds:
            logits = tf.cast(forward(images), tf.float32)
            totals += eval_row(logits, tf.cast(labels, tf.int32))
        return totals

    top1, top5, loss, count = (float(v) for v in run(dataset).numpy())
    n = max(count, 1.0)
    return {
        "top1": top1 / n,
        "top5": top5 / n,
        "loss": loss / n,
        "count": int(count),
    }


def evaluate_model(model, dataset, training=False):
    """`evaluate` of one Keras model (inference-mode BN by default)."""
    return evaluate(lambda images: model(images, training=training), dataset)
