"""EKG's knowledge-distillation curriculum (METHODS.md §3.4).

The student (the extracted sub-network) sees two augmented views of every
image. Its teachers are the memory bank's sub-networks, whose logits for
the un-augmented image are cached (`knowledge[B, classes, T]`, teacher 0 =
the lowest-loss one). Per batch, only the teachers at least as close to
teacher 0 as the student is are used; their mean logits are the target of
a temperature-scaled KL term next to the usual cross-entropy. As the
student improves, fewer teachers qualify: a curriculum that tightens.

All functions are pure TF ops on tensors (XLA-clean).
"""

import tensorflow as tf

_TIE = 1e-6


def kl_t(teacher_logits, student_logits, temperature, axis=-1):
    """`T * sum softmax(a/T) (log softmax(a/T) - log softmax(b/T))`.

    EKG scales the KL divergence by `T`, not by the usual `T**2`.

    Args:
        teacher_logits: `a`, broadcastable against `student_logits`.
        student_logits: `b`.
        temperature: `T > 0`.
        axis: the class axis.

    Returns:
        The divergence per example (the class axis reduced).
    """
    t = tf.cast(temperature, tf.float32)
    a = tf.cast(teacher_logits, tf.float32) / t
    b = tf.cast(student_logits, tf.float32) / t
    log_p = tf.nn.log_softmax(a, axis=axis)
    log_q = tf.nn.log_softmax(b, axis=axis)
    return t * tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=axis)


def view_major(images):
    """`[B, V, H, W, C]` views as one view-major batch `[V * B, H, W, C]`."""
    shape = tf.shape(images)
    return tf.reshape(
        tf.transpose(images, [1, 0, 2, 3, 4]),
        tf.concat([[-1], shape[2:]], axis=0),
    )


def view_hits(logits, labels):
    """float32 `[V * B]`: 1 where view-major `logits` predict `labels[B]`."""
    views = tf.shape(logits)[0] // tf.shape(labels)[0]
    pred = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return tf.cast(tf.equal(pred, tf.tile(labels, [views])), tf.float32)


def select_teachers(knowledge, student_views, temperature):
    """The curriculum's teacher selection for one batch.

    `d_s = sum_b KL_T(K_b0 || mean_v p_bv)` and
    `d_t = sum_b KL_T(K_b0 || K_bt)`; teacher `t` is selected when
    `d_t <= d_s` (up to float32 rounding, 1e-6 per image). The reference
    writes `<`; the two differ only on ties, and `<=` makes a student equal
    to its teachers get the plain CE loss instead of a KL towards uniform
    logits.

    Args:
        knowledge: `[B, classes, T]` teacher logits.
        student_views: `[V, B, classes]` student logits of each view.
        temperature: `T`.

    Returns:
        `(selected, d_s, d_t)`: float32 `[T]` 0/1, a scalar and `[T]`.
    """
    knowledge = tf.cast(knowledge, tf.float32)
    best = knowledge[:, :, 0]
    student = tf.reduce_mean(tf.cast(student_views, tf.float32), axis=0)
    d_s = tf.reduce_sum(kl_t(best, student, temperature))
    teachers = tf.transpose(knowledge, [2, 0, 1])
    d_t = tf.reduce_sum(kl_t(best[None], teachers, temperature), axis=1)
    # Ties within float32 rounding (1e-6 per image) count as ties: the
    # divergence of two equal rows is not always computed as exactly 0.
    batch = tf.cast(tf.shape(knowledge)[0], tf.float32)
    selected = tf.cast(d_t <= d_s + _TIE * batch, tf.float32)
    return selected, d_s, d_t


def knowledge_target(knowledge, selected):
    """Mean logits of the selected teachers (zeros when none is)."""
    knowledge = tf.cast(knowledge, tf.float32)
    count = tf.reduce_sum(selected)
    total = tf.reduce_sum(knowledge * selected, axis=-1)
    return tf.math.divide_no_nan(total, count)


def knowledge_loss(student_views, labels, knowledge, temperature):
    """Summed CE + KL_T(target || student) over views and batch.

    Args:
        student_views: `[V, B, classes]` student logits.
        labels: int `[B]`.
        knowledge: `[B, classes, T]` teacher logits.
        temperature: `T`.

    Returns:
        `(loss_sum, kl_sum, selected)`: the sum over `V * B` terms of
        `CE + KL_T` (divide by `V * batch` for the mean), the KL part alone,
        and the `[T]` selection.
    """
    views = tf.cast(student_views, tf.float32)
    selected, _, _ = select_teachers(
        knowledge, tf.stop_gradient(views), temperature
    )
    target = tf.stop_gradient(knowledge_target(knowledge, selected))
    labels = tf.cast(labels, tf.int32)
    num_views = tf.shape(views)[0]
    tiled = tf.tile(labels[None], [num_views, 1])
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(tiled, views)
    kl = kl_t(target[None], views, temperature)
    return tf.reduce_sum(ce) + tf.reduce_sum(kl), tf.reduce_sum(kl), selected
