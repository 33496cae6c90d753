"""The sub-network memory bank and its teachers (METHODS.md §3.4).

EKG fills a `SubnetMemoryBank` with the search history, picks teachers
from it (`select_teachers`) and caches the teachers' logits for every
training image (`compute_knowledge`) in its `knowledge` variable.
"""

import numpy as np
import tensorflow as tf

from tfgraft import errors


class SubnetMemoryBank(tf.Module):
    """Fixed-capacity store of sub-network snapshots and teacher logits.

    A snapshot is `(orders, rates, loss)`: the concatenated gate orders
    (`snapshot_size` floats), one rate per gate and a scalar loss. `push`
    appends one (an error once `capacity` is reached), `read(i)` returns
    snapshot `i`, `sample(seed)` a uniformly drawn stored one. All three
    are plain TF ops on non-trainable variables, so they work eagerly and
    inside `tf.function`, and the bank is checkpointed with a run. Teacher
    logits `knowledge[N, classes, T]` and the teachers' snapshot indices
    live in the same module.

    Args:
        capacity: most snapshots held.
        snapshot_size: floats per snapshot's orders (sum of gate widths).
        num_gates: rates per snapshot.
        knowledge_shape: optional `(N, classes, T)` of the teacher logits.
        name: module name.

    Example:

    >>> bank = SubnetMemoryBank(4, snapshot_size=6, num_gates=2)
    >>> int(bank.push(tf.range(6.0), [1.0, 0.5], 0.7))
    0
    >>> float(bank.read(0)[2])
    0.7
    """

    def __init__(
        self,
        capacity,
        snapshot_size,
        num_gates,
        knowledge_shape=None,
        name="memory_bank",
    ):
        super().__init__(name=name)
        sizes = errors.positive_ints(
            "SubnetMemoryBank",
            capacity=capacity,
            snapshot_size=snapshot_size,
            num_gates=num_gates,
        )
        for arg, value in sizes.items():
            setattr(self, arg, value)
        self.orders = _state(
            tf.zeros([self.capacity, self.snapshot_size]), "orders"
        )
        self.rates = _state(tf.zeros([self.capacity, self.num_gates]), "rates")
        self.losses = _state(tf.zeros([self.capacity]), "losses")
        self.count = _state(0, "count")
        self.knowledge = None
        self.teachers = None
        if knowledge_shape is not None:
            shape = [int(d) for d in knowledge_shape]
            if len(shape) != 3 or min(shape) < 1:
                raise ValueError(
                    "SubnetMemoryBank knowledge_shape must be (N, classes, "
                    f"T). Received: knowledge_shape={knowledge_shape}"
                )
            self.knowledge = _state(tf.zeros(shape), "knowledge")
            self.teachers = _state(-tf.ones([shape[2]], tf.int32), "teachers")

    def push(self, orders, rates, loss):
        """Stores one snapshot; returns its index (int32 tensor)."""
        index = self.count.read_value()
        tf.debugging.assert_less(
            index,
            self.capacity,
            message=f"SubnetMemoryBank '{self.name}' is full",
        )
        orders = tf.reshape(tf.cast(orders, tf.float32), [self.snapshot_size])
        rates = tf.reshape(tf.cast(rates, tf.float32), [self.num_gates])
        self.orders.scatter_nd_update([[index]], orders[None])
        self.rates.scatter_nd_update([[index]], rates[None])
        self.losses.scatter_nd_update(
            [[index]], tf.reshape(tf.cast(loss, tf.float32), [1])
        )
        self.count.assign_add(1)
        return index

    def read(self, index):
        """`(orders, rates, loss)` of snapshot `index`."""
        tf.debugging.assert_less(
            tf.cast(index, tf.int32),
            self.count,
            message=f"SubnetMemoryBank '{self.name}': index not stored",
        )
        return (
            tf.gather(self.orders, index),
            tf.gather(self.rates, index),
            tf.gather(self.losses, index),
        )

    def sample(self, seed):
        """A uniformly drawn stored snapshot: `(index, orders, rates, loss)`.

        Args:
            seed: int `[2]` stateless seed.
        """
        tf.debugging.assert_positive(
            self.count, message=f"SubnetMemoryBank '{self.name}' is empty"
        )
        index = tf.random.stateless_uniform(
            [], seed, minval=0, maxval=self.count, dtype=tf.int32
        )
        return (index,) + self.read(index)

    def stored_losses(self):
        """Host array of the stored snapshots' losses."""
        return self.losses.numpy()[: int(self.count.numpy())]

    def set_knowledge(self, logits, teachers):
        """Stores teacher logits `[N, classes, T]` and their indices `[T]`."""
        if self.knowledge is None:
            raise ValueError(
                f"SubnetMemoryBank '{self.name}' was built without "
                "knowledge_shape"
            )
        self.knowledge.assign(tf.cast(logits, tf.float32))
        self.teachers.assign(tf.cast(teachers, tf.int32))


def _state(initial, name):
    """A non-trainable variable of the bank (checkpointed with it)."""
    return tf.Variable(initial, trainable=False, name=name)


def split_orders(flat, sizes):
    """Splits concatenated orders back into one array per gate."""
    flat = np.asarray(flat, np.float32)
    bounds = np.cumsum([0] + list(sizes))
    return [flat[a:b].copy() for a, b in zip(bounds[:-1], bounds[1:])]


def select_teachers(losses, num_teachers=5):
    """Teacher indices spread over the range of validation losses.

    The losses get an `i * 1e-12` tie-break; targets are `num_teachers`
    evenly spaced values from the lowest loss up to (not including) the
    highest, `min + k (max - min) / T` (the reference's `arange`, without
    its float rounding, which can yield 6 targets); each target takes the
    nearest entry not used yet. Teacher 0 is therefore the lowest-loss
    entry (normally the unpruned net). With fewer entries than teachers,
    entries repeat (nearest overall).

    Args:
        losses: validation losses of the history entries.
        num_teachers: `T`.

    Returns:
        A list of `T` indices into `losses`.
    """
    losses = np.asarray(losses, np.float64).ravel()
    n = losses.size
    if n == 0:
        raise ValueError("select_teachers needs at least one entry.")
    if int(num_teachers) < 1:
        raise ValueError(
            f"num_teachers must be >= 1. Received: num_teachers={num_teachers}"
        )
    losses = losses + np.arange(n) * 1e-12
    lo, hi = losses.min(), losses.max()
    targets = lo + (hi - lo) * np.arange(num_teachers) / num_teachers
    used, chosen = set(), []
    for target in targets:
        pool = [i for i in range(n) if i not in used] or list(range(n))
        best = min(pool, key=lambda i: (abs(losses[i] - target), i))
        used.add(best)
        chosen.append(best)
    return chosen


def compute_knowledge(gated, snapshots, images, batch_size=256):
    """Logits of each snapshot's sub-network for every image, in order.

    The shared (gated) weights are used with each snapshot's masks, in
    training-mode BN over consecutive batches of `batch_size`, as the
    reference computes its knowledge array.

    Args:
        gated: the `GatedNetwork` the snapshots come from.
        snapshots: list of `(orders, rates)` (orders as one array per gate).
        images: uint8 or float `[N, H, W, 3]` images, un-augmented.
        batch_size: batch size.

    Returns:
        float32 `[N, classes, len(snapshots)]`; `gated` keeps the state it
        had before the call.
    """
    saved = gated.state()
    data = tf.constant(images)
    batch_size = int(batch_size)

    # All batches of one snapshot in one call (one host sync per teacher,
    # not per batch); traced once, the masks are variables.
    @tf.function(input_signature=[tf.TensorSpec(data.shape, data.dtype)])
    def forward(x):
        num = tf.shape(x)[0]
        batches = (num + batch_size - 1) // batch_size
        rows = tf.TensorArray(tf.float32, size=batches, infer_shape=False)
        for k in tf.range(batches):
            batch = x[k * batch_size : (k + 1) * batch_size]
            batch = tf.cast(batch, tf.float32)
            rows = rows.write(
                k, tf.cast(gated.model(batch, training=True), tf.float32)
            )
        return rows.concat()

    columns = []
    try:
        for orders, rates in snapshots:
            gated.set_state(orders=orders, rates=rates)
            columns.append(forward(data).numpy())
    finally:
        gated.set_state(*saved)
    return np.stack(columns, axis=-1).astype(np.float32)
