"""Trainer: N nets trained side by side in one `tf.function` step."""

import keras
import tensorflow as tf

from tfgraft import errors
from tfgraft.training.evaluation import eval_row as _eval_row

ON_NAN = ("stop", "skip_batch")


class Trainer(tf.Module):
    """Owns N nets, their optimizers and one global step; runs their steps.

    Every net has its own optimizer (and so its own LR schedule) and reads
    its own data stream. One call of `train_loop` runs `num_steps` steps of
    all nets inside a single `tf.function`; each step is one `strategy.run`
    whose replica function updates every net. Only the pure forward/backward
    (`_grad_fns`) is compiled with XLA when `jit` is on:
    `apply_gradients` and assignments stay outside XLA because XLA cannot
    reach mirrored variables of other replicas (STYLE.md §1.2).

    Gradient accumulation splits each per-replica batch into `accum_steps`
    micro-batches inside the step and applies the summed gradients once, so
    the update equals the large-batch update for models without batch
    statistics (BN sees micro-batch statistics, as in PyTorch accumulation).
    The loss is always scaled by the *global* batch size.

    Subclasses change the method through the hooks below. Labels may be
    any nest of tensors batched along axis 0 (e.g. labels plus cached
    teacher logits), passed on as the dataset yields them.

    Args:
        nets: list of N Keras models built inside `strategy.scope()`.
        optimizers: list of N optimizers, one per net.
        strategy: the `tf.distribute.Strategy` the nets live in.
        global_batch_size: examples per net per step over all replicas.
        jit: XLA-compile the per-replica forward/backward.
        accum_steps: micro-batches per step.
        concurrent_nets: let the N nets' ops of a step run concurrently
            (off: each net starts after the previous one's update, which is
            faster where one net already fills the device, e.g. CPUs).
        on_nan: what a non-finite loss or gradient of a net does: `"stop"`
            (the step is applied as usual and reported, so the loop can stop
            the job before the next checkpoint) or `"skip_batch"` (that
            net's update is undone inside the step: weights, BN statistics
            and optimizer slots keep their previous values, while the
            optimizer's `iterations`, and so its LR schedule, still advance
            with the global step, as the batch was consumed). Under loss
            scaling (mixed_float16) only the loss is checked: the
            `LossScaleOptimizer` already skips non-finite gradients.

    The constructor must run inside `strategy.scope()`.
    """

    def __init__(
        self,
        nets,
        optimizers,
        strategy,
        *,
        global_batch_size,
        jit=False,
        accum_steps=1,
        concurrent_nets=False,
        on_nan="stop",
    ):
        super().__init__(name="trainer")
        if on_nan not in ON_NAN:
            raise ValueError(
                f"on_nan must be one of {', '.join(ON_NAN)}. "
                f"Received: on_nan={on_nan}"
            )
        self.on_nan = on_nan
        if len(nets) != len(optimizers) or not nets:
            raise ValueError(
                "Trainer needs one optimizer per net. Received: "
                f"{len(nets)} nets, {len(optimizers)} optimizers"
            )
        replicas = strategy.num_replicas_in_sync
        if global_batch_size % (replicas * accum_steps):
            raise errors.ArgumentError(
                "{global_batch_size} must be divisible by the replicas "
                f"({replicas}) x " + "{accum_steps}",
                global_batch_size=global_batch_size,
                accum_steps=accum_steps,
            )
        self.nets = list(nets)
        self.optimizers = list(optimizers)
        self.strategy = strategy
        self.global_batch_size = int(global_batch_size)
        self.accum_steps = int(accum_steps)
        self.jit = bool(jit)
        self.concurrent_nets = bool(concurrent_nets)
        self.global_step = tf.Variable(
            0,
            dtype=tf.int64,
            trainable=False,
            name="global_step",
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )
        # Per net: loss, correct, examples, steps since `reset_progress`,
        # added inside the step loop so that a console thread can show
        # them while it runs (no host sync per step); not checkpointed.
        self.progress = tf.Variable(
            tf.zeros([len(self.nets), 4]),
            trainable=False,
            name="progress",
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )
        for net, opt in zip(self.nets, self.optimizers):
            opt.build(net.trainable_variables)
        self._grad_fns = [
            self._jit(self._make_grad_fn(i)) for i in range(len(self.nets))
        ]
        self._train_loop = tf.function(self._train_loop_impl)
        # The evaluation's forward pass is compiled like the training's
        # (XLA under `jit`, called inside the replica function as the
        # gradients are); the loop over batches stays in one function.
        self._eval_rows_fn = self._jit(self._eval_rows)
        self._eval_fn = tf.function(self._eval_impl)

    def _jit(self, fn):
        """`fn` XLA-compiled under `jit`, else as it is."""
        return tf.function(fn, jit_compile=True) if self.jit else fn

    @property
    def num_nets(self):
        return len(self.nets)

    # === Hooks ===

    def compute_loss(self, net_index, logits, labels, images):
        """Per-replica loss: summed cross-entropy over the global batch."""
        del net_index, images
        logits = tf.cast(logits, tf.float32)
        if labels.shape.rank == 2:
            ce = tf.nn.softmax_cross_entropy_with_logits(labels, logits)
        else:
            ce = tf.nn.sparse_softmax_cross_entropy_with_logits(
                tf.cast(labels, tf.int32), logits
            )
        return tf.reduce_sum(ce) / self.global_batch_size

    def transform_gradients(self, net_index, grads):
        """Hook between backward and apply (gradient surgery)."""
        del net_index
        return grads

    def after_apply(self, net_index):
        """Hook after the optimizer step of one net (replica context)."""
        del net_index

    def forward(self, net_index, images):
        """Training-mode logits of net `net_index` for one (micro-)batch.

        Runs inside the per-replica gradient tape (and XLA when `jit`), so a
        subclass may reshape structured inputs (e.g. several augmented
        views) or run extra forward passes (e.g. frozen teacher nets);
        only the net's trainable variables are differentiated.
        """
        return self.nets[net_index](images, training=True)

    def count_correct(self, net_index, logits, labels):
        """Correctly classified examples of one (micro-)batch (a float)."""
        del net_index
        return _count_correct(logits, labels)

    # === Steps ===

    def _make_grad_fn(self, i):
        net = self.nets[i]
        opt = self.optimizers[i]

        def one_batch(images, labels):
            with tf.GradientTape() as tape:
                logits = self.forward(i, images)
                loss = self.compute_loss(i, logits, labels, images)
                scaled = opt.scale_loss(loss)
            grads = tape.gradient(scaled, net.trainable_variables)
            correct = self.count_correct(i, logits, labels)
            return loss, correct, grads

        def grad_fn(images, labels):
            if self.accum_steps == 1:
                return one_batch(images, labels)
            k = self.accum_steps
            # Images and labels may be nests (e.g. labels plus cached
            # teacher logits): split every tensor along its batch axis.
            micro = tf.nest.map_structure(lambda x: _split(x, k), images)
            micro_labels = tf.nest.map_structure(lambda x: _split(x, k), labels)
            loss = tf.zeros([], tf.float32)
            correct = tf.zeros([], tf.float32)
            grads = [tf.zeros_like(v) for v in net.trainable_variables]
            for j in tf.range(k):
                mloss, mcorrect, mgrads = one_batch(
                    tf.nest.map_structure(lambda x: x[j], micro),
                    tf.nest.map_structure(lambda x: x[j], micro_labels),
                )
                loss += mloss
                correct += mcorrect
                grads = [g + mg for g, mg in zip(grads, mgrads)]
            return loss, correct, grads

        return grad_fn

    def _replica_step(self, batches):
        stats = []
        done = []
        for i, (net, opt) in enumerate(zip(self.nets, self.optimizers)):
            images, labels = batches[i]
            if done and not self.concurrent_nets:
                # Start net i only once net i-1 is updated: each net's ops
                # then get every intra-op thread instead of fighting over
                # them (on CPUs concurrent nets oversubscribe the cores).
                with tf.control_dependencies(done):
                    images = tf.identity(images)
            skip = self.on_nan == "skip_batch"
            if skip:
                saved = _undo_state(net, opt)
                before = [tf.identity(v.value) for v in saved]
            loss, correct, grads = self._grad_fns[i](images, labels)
            grads = self.transform_gradients(i, grads)
            bad = 1.0 - tf.cast(_all_finite(loss, grads, opt), tf.float32)
            opt.apply_gradients(zip(grads, net.trainable_variables))
            sync_statistics(net, self.strategy)
            self.after_apply(i)
            count = tf.cast(tf.shape(images)[0], tf.float32)
            raw_loss = loss
            if skip:
                # Every replica must agree (a non-finite gradient of one
                # replica poisons the all-reduced update of all).
                any_bad = bad
                if self.strategy.num_replicas_in_sync > 1:
                    ctx = tf.distribute.get_replica_context()
                    any_bad = ctx.all_reduce(tf.distribute.ReduceOp.SUM, bad)
                keep = any_bad > 0
                for v, old in zip(saved, before):
                    v.assign(tf.where(keep, old, v.value))
                loss, correct, count = (
                    tf.where(keep, 0.0, x) for x in (loss, correct, count)
                )
            stats.append(tf.stack([loss, correct, count, bad, raw_loss]))
            if not self.concurrent_nets:
                # Reads are ordered after the updates of the same variables.
                done = [v.value for v in net.trainable_variables]
        return tf.stack(stats)

    def _train_loop_impl(self, iterators, num_steps):
        totals = tf.zeros([self.num_nets, 4], tf.float32)
        # Step (1-based), learning rate and loss of each net's first
        # non-finite step in this loop (-1: none).
        first = tf.fill([self.num_nets, 3], -1.0)
        for _ in tf.range(num_steps):
            batches = tuple(next(it) for it in iterators)
            lrs = tf.stack(
                [tf.cast(o.learning_rate, tf.float32) for o in self.optimizers]
            )
            per_replica = self.strategy.run(self._replica_step, args=(batches,))
            reduced = self.strategy.reduce(
                tf.distribute.ReduceOp.SUM, per_replica, axis=None
            )
            self.global_step.assign_add(1)
            bad = reduced[:, 3] > 0
            totals += tf.concat(
                [reduced[:, :3], tf.cast(bad, tf.float32)[:, None]], axis=1
            )
            self.progress.assign_add(
                tf.concat([reduced[:, :3], tf.ones([self.num_nets, 1])], 1)
            )
            step = tf.cast(self.global_step, tf.float32)
            row = tf.stack([tf.fill([self.num_nets], step), lrs, reduced[:, 4]])
            first = tf.where(
                (bad & (first[:, 0] < 0))[:, None], tf.transpose(row), first
            )
        return totals, first

    def train_loop(self, iterators, num_steps):
        """Runs `num_steps` steps of every net; returns host-side stats.

        Args:
            iterators: one distributed iterator per net.
            num_steps: steps to run (a tensor, so no retracing).

        Returns:
            A list of dicts per net: mean `loss` and train `accuracy` (over
            the applied steps), `nonfinite_steps` (steps whose loss or
            gradients were not finite: skipped under `on_nan="skip_batch"`)
            and, when there was one, `first_nonfinite` = `{"step", "lr",
            "loss"}` of the first such step (step counted from 1).
        """
        totals, first = self._train_loop(
            tuple(iterators), tf.constant(num_steps, tf.int32)
        )
        results = []
        for t, f in zip(totals.numpy(), first.numpy()):
            applied = num_steps - t[3] if self.on_nan == "skip_batch" else 0
            entry = {
                "loss": float(t[0] / max(applied or num_steps, 1)),
                "accuracy": float(t[1] / max(t[2], 1.0)),
                "nonfinite_steps": int(t[3]),
            }
            if f[0] >= 0:
                entry["first_nonfinite"] = {
                    "step": int(f[0]),
                    "lr": float(f[1]),
                    "loss": float(f[2]),
                }
            results.append(entry)
        return results

    def reset_progress(self):
        """Zeroes the sums `read_progress` returns (at an epoch's start)."""
        self.progress.assign(tf.zeros_like(self.progress))

    def read_progress(self):
        """Per net `[loss, correct, examples, steps]` summed since the last
        `reset_progress`, as NumPy; safe to call from another thread while
        `train_loop` runs (the console's live bar does)."""
        return self.progress.numpy()

    # === Evaluation ===

    def _eval_replica(self, images, labels):
        # A plain function for `strategy.run`: handed the XLA function
        # itself, a mirrored evaluation fails (InvalidArgumentError).
        return self._eval_rows_fn(images, labels)

    def _eval_rows(self, images, labels):
        labels = tf.cast(labels, tf.int32)
        probs_sum = None
        rows = []
        for net in self.nets:
            logits = tf.cast(net(images, training=False), tf.float32)
            rows.append(_eval_row(logits, labels))
            probs = tf.nn.softmax(logits)
            probs_sum = probs if probs_sum is None else probs_sum + probs
        rows.append(_eval_row(tf.math.log(probs_sum / self.num_nets), labels))
        return tf.stack(rows)

    def _eval_impl(self, dist_dataset):
        totals = tf.zeros([self.num_nets + 1, 4], tf.float32)
        for images, labels in dist_dataset:
            per_replica = self.strategy.run(
                self._eval_replica, args=(images, labels)
            )
            totals += self.strategy.reduce(
                tf.distribute.ReduceOp.SUM, per_replica, axis=None
            )
        return totals

    def evaluate(self, dataset):
        """Top-1/top-5/loss of every net and of their ensemble on `dataset`.

        The ensemble averages the nets' softmax probabilities; a single
        net has no ensemble (its "ensemble" row would be the net itself,
        with a loss made infinite by log(softmax) underflow).

        Returns:
            `{"nets": [{"top1", "top5", "loss"}, ...], "ensemble": {...},
            "images": count}`, without "ensemble" for one net.
        """
        dist = self.strategy.experimental_distribute_dataset(dataset)
        totals = self._eval_fn(dist).numpy()
        results = [
            {
                "top1": float(t[0] / t[3]),
                "top5": float(t[1] / t[3]),
                "loss": float(t[2] / t[3]),
            }
            for t in totals
        ]
        out = {"nets": results[:-1], "images": int(totals[0][3])}
        if self.num_nets > 1:
            out["ensemble"] = results[-1]
        return out

    # === State ===

    def checkpoint_items(self):
        """Everything that changes in training, for one tf.train.Checkpoint."""
        items = {"global_step": self.global_step}
        for i, (net, opt) in enumerate(zip(self.nets, self.optimizers)):
            items[f"net_{i}"] = net
            items[f"optimizer_{i}"] = opt
        return items

    def learning_rates(self):
        """Current learning rate of each net (host floats)."""
        return [
            float(keras.ops.convert_to_numpy(opt.learning_rate))
            for opt in self.optimizers
        ]


def sync_statistics(net, strategy):
    """Averages a net's float non-trainable variables over the replicas.

    Called in replica context after a net's update. Keras 3 creates BN
    moving statistics as mirrored variables with aggregation NONE, so each
    replica would keep its own EMA. Averaging them (one packed all-reduce
    per net) makes every replica hold the same value, as a global-batch EMA
    of the mean would. A no-op under one replica.
    """
    if strategy.num_replicas_in_sync == 1:
        return
    stats = [
        v
        for v in net.non_trainable_variables
        if keras.backend.is_float_dtype(v.dtype)
    ]
    if not stats:
        return
    ctx = tf.distribute.get_replica_context()
    # `v.value` is the replica's variable; MultiWorkerMirroredStrategy
    # (one device per worker) regroups it into the mirrored variable,
    # which has no device to reduce to. A read tensor keeps its device.
    means = ctx.all_reduce(
        tf.distribute.ReduceOp.MEAN, [tf.identity(v.value) for v in stats]
    )
    for v, m in zip(stats, means):
        v.assign(m)


def _undo_state(net, opt):
    """Variables a skipped batch must leave unchanged (all but iterations)."""
    counters = {id(opt.iterations)}
    inner = getattr(opt, "inner_optimizer", None)
    if inner is not None:
        counters.add(id(inner.iterations))
    return list(net.variables) + [
        v for v in opt.variables if id(v) not in counters
    ]


def _all_finite(loss, grads, opt):
    """Whether the loss and (unless loss scaling handles them) grads are."""
    checks = [tf.reduce_all(tf.math.is_finite(loss))]
    if not isinstance(opt, keras.optimizers.LossScaleOptimizer):
        for g in grads:
            if isinstance(g, tf.IndexedSlices):
                g = g.values
            if g is not None:
                checks.append(tf.reduce_all(tf.math.is_finite(g)))
    return tf.reduce_all(tf.stack(checks))


def _split(x, k):
    shape = tf.shape(x)
    return tf.reshape(x, tf.concat([[k, shape[0] // k], shape[1:]], axis=0))


def _count_correct(logits, labels):
    pred = tf.argmax(logits, axis=-1, output_type=tf.int32)
    if labels.shape.rank == 2:
        labels = tf.argmax(labels, axis=-1, output_type=tf.int32)
    labels = tf.cast(labels, tf.int32)
    return tf.reduce_sum(tf.cast(tf.equal(pred, labels), tf.float32))
