"""GraftingModel: Filter Grafting with N nets under one `model.fit`.

The grafting job's training (`tfgraft.grafting.job.Grafting`) wired into
Keras' `fit`: the same `Grafter.graft_step`, BN replica sync
(`trainer.sync_statistics`) and per-net optimizers (`optimizers.per_net`).
"""

import math

import keras
import tensorflow as tf

from tfgraft.grafting import grafter as grafter_lib
from tfgraft.training import optimizers as optimizers_lib
from tfgraft.training import trainer as trainer_lib


def difflr_scales(num_nets):
    """Initial-LR factors of the paper's dlr: (1 + cos(pi (N - i) / N)) / 2.

    Net index k (0-based) is the paper's replica i = k + 1, so the last net
    keeps the full rate (METHODS.md §1.2.6).
    """
    n = num_nets
    return [(1 + math.cos(math.pi * (n - (k + 1)) / n)) / 2 for k in range(n)]


def stream_key(net_index):
    """The key of net `net_index`'s batch in a `per_net_dataset` element."""
    return f"net_{net_index}"


def per_net_dataset(datasets):
    """Zips one dataset per net into the input of `GraftingModel.fit`.

    Each element is `{"net_0": batch_0, "net_1": batch_1, ...}` where batch
    i is what dataset i yields (`(x, y)` or `(x, y, sample_weight)`), net
    i's own stream. The zip ends with the shortest dataset.

    Args:
        datasets: a list of N >= 2 batched `tf.data.Dataset`s.

    Returns:
        A `tf.data.Dataset` to pass to `GraftingModel.fit`.
    """
    datasets = list(datasets)
    if len(datasets) < 2:
        raise ValueError(
            "per_net_dataset needs one dataset per net (at least 2). "
            f"Received: len(datasets)={len(datasets)}"
        )
    return tf.data.Dataset.zip(
        {stream_key(i): ds for i, ds in enumerate(datasets)}
    )


def _check_every(name, value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"{name} must be a positive int or None. Received: "
            f"{name}={value!r}"
        )
    return value


class GraftCallback(keras.callbacks.Callback):
    """Runs a `GraftingModel`'s graft step at its epoch or step cadence.

    `GraftingModel.fit` appends one to the callbacks it is given, so it
    runs after the user's callbacks at every epoch end: a `ModelCheckpoint`
    or `EarlyStopping(restore_best_weights=True)` sees the weights that the
    epoch's validation measured (before the graft), as the job's best-net
    tracker does.

    Epoch cadence (`every_epochs=k`): a graft after every k-th epoch, after
    validation, except after the run's last epoch (the job skips that graft
    too: it would change the weights after their accuracy was measured); an
    epoch at which training stops early (`model.stop_training`) is the last
    one and is not grafted either.

    Step cadence (`every_steps=k`): a graft whenever the model's
    `global_step` reaches a multiple of k, the last step included (as the
    job's step hook); no epoch-end graft. `k` must be a multiple of
    `steps_per_execution`, since Keras calls batch hooks only once per
    execution.

    Once a graft has happened, every epoch's logs get `alphas` (the newest
    graft's mean alpha per net) as `net_<i>_graft_alpha` and `grafts` (this
    `fit`'s count).
    """

    def __init__(self, every_epochs=1, every_steps=None):
        super().__init__()
        self.every_epochs = _check_every("every_epochs", every_epochs)
        self.every_steps = _check_every("every_steps", every_steps)
        if self.every_epochs and self.every_steps:
            raise ValueError(
                "Graft either every_epochs or every_steps, not both (a "
                "step cadence needs every_epochs=None). Received: "
                f"every_epochs={every_epochs}, every_steps={every_steps}"
            )
        self.alphas = None
        self.grafts = 0

    def on_train_begin(self, logs=None):
        if not isinstance(self.model, GraftingModel):
            raise ValueError(
                "GraftCallback grafts a GraftingModel's nets. Received: "
                f"model={type(self.model).__name__}"
            )
        per_execution = int(getattr(self.model, "steps_per_execution", 1))
        if self.every_steps and self.every_steps % per_execution:
            raise ValueError(
                f"every_steps={self.every_steps} must be a multiple of "
                f"compile(steps_per_execution={per_execution}): Keras runs "
                "batch callbacks once per execution"
            )
        self.grafts = 0
        self._last_step = int(self.model.global_step.numpy())

    def _graft(self):
        self.alphas = self.model.grafter.graft_step().numpy().tolist()
        self.grafts += 1

    def on_train_batch_end(self, batch, logs=None):
        if not self.every_steps:
            return
        step = int(self.model.global_step.numpy())
        if step // self.every_steps > self._last_step // self.every_steps:
            self._graft()
        self._last_step = step

    def on_epoch_end(self, epoch, logs=None):
        last = epoch + 1 >= self.params["epochs"] or self.model.stop_training
        if (
            self.every_epochs
            and (epoch + 1) % self.every_epochs == 0
            and not last
        ):
            self._graft()
        if logs is not None and self.alphas is not None:
            for i, a in enumerate(self.alphas):
                logs[f"net_{i}_graft_alpha"] = a
            logs["grafts"] = self.grafts


class GraftingModel(keras.Model):
    """N nets trained side by side and grafted on a ring, under one `fit`.

    Each training step updates every net with its own optimizer and its
    own loss on its own batch: with `per_net_dataset([ds_0, ..., ds_N-1])`
    net i reads dataset i (the custom trainer's set-up, which METHODS.md
    §1.6 asks for: each net its own data order and augmentation); with
    plain `(x, y)` data every net trains on the same batch (then two nets
    differ only by initialisation, LR and momentum, and collapse to one
    after each graft). A `Grafter` blends the nets (pre-graft snapshots,
    entropy or L1 alphas, ring i <- i-1) after every `every_epochs`-th epoch
    but the last, or every `every_steps` steps; see `GraftCallback`.

    `evaluate` and validation run every net and the ensemble on the same
    batch; `predict` (and calling the model) returns the ensemble: the mean
    of the nets' softmax probabilities (of their outputs when
    `from_logits=False`), as the trainer's ensemble. `model.nets` are the
    user's own models, trained in place, ready to export one by one
    (`tfgraft.export.export_saved_model(model.nets[i], path)`, or one
    `tfgraft.export.Exporter()` for all, which traces once).

    Fit logs (and `history.history`): `loss` (mean over the nets),
    `net_<i>_loss`, `net_<i>_accuracy` (top-1 by argmax, sparse or one-hot
    labels) and `net_<i>_<name>` for each metric given to `compile`; after
    a graft also `net_<i>_graft_alpha` and `grafts`; validation adds the
    same with `val_` and `val_ensemble_accuracy`.

    Differences from the custom trainer, none of which changes a zoo
    net's result: the nets' own regularisation losses (`net.losses`, e.g.
    `kernel_regularizer`) are added to each net's loss, as Keras' `fit`
    does (the zoo nets have none: weight decay is coupled in `TorchSGD`);
    the epoch's `net_<i>_loss` averages per example rather than per step
    (equal for equal batches); and there is no gradient accumulation, NaN
    policy or checkpoint/resume of its own (use Keras callbacks).

    Args:
        nets: N >= 2 functional or `Sequential` Keras models of one
            architecture, built (see `Grafter`). They may have been
            compiled on their own; only this model's `compile` counts.
        every_epochs: graft after every k-th epoch (default 1, the paper),
            or None.
        every_steps: graft every k steps instead (then `every_epochs`
            must be None). Both None: never graft (the control arm: the
            same nets, LRs and data trained independently).
        criterion: `"entropy"` or `"l1"` (`Grafter`).
        level: `"layer"` or `"filter"` (`Grafter`).
        a: amplitude A of the alpha formula.
        c: steepness c of the alpha formula.
        scope: `"all"` or `"conv_bn"`: which tensors a layer-level graft
            blends (`Grafter`).
        from_logits: the nets output logits (default) rather than
            probabilities; sets the default loss and the ensemble.
        name: the model's name.

    Example:

    ```python
    nets = [make_my_model() for _ in range(2)]
    model = GraftingModel(nets)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  lr_scales=difflr_scales(2))
    model.fit(per_net_dataset([ds.shuffle(1024, seed=i) for i in range(2)]),
              epochs=10, validation_data=test_ds)
    ```

    Reference:
        - [Meng et al., "Filter Grafting for Deep Neural Networks",
          CVPR 2020](https://arxiv.org/abs/2001.05868)
    """

    def __init__(
        self,
        nets,
        *,
        every_epochs=1,
        every_steps=None,
        criterion="entropy",
        level="layer",
        a=0.4,
        c=500.0,
        scope=grafter_lib.ALL,
        from_logits=True,
        name="grafting_model",
    ):
        # Checked before anything is built, so bad input is one line.
        GraftCallback(every_epochs, every_steps)  # validates both, the pair
        # Checks N >= 2 and one architecture (the first mismatch named).
        grafter = grafter_lib.Grafter(
            nets, criterion=criterion, level=level, a=a, c=c, scope=scope
        )
        super().__init__(name=name)
        self.nets = list(grafter.nets)
        self.grafter = grafter
        self.from_logits = bool(from_logits)
        self.every_epochs = every_epochs
        self.every_steps = every_steps
        # Training steps run by `fit` (the step cadence counts these).
        self.global_step = self.add_weight(
            name="global_step",
            shape=(),
            dtype="int64",
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
        )
        self.optimizers = None
        self._own_metrics = []
        self.built = True

    @property
    def num_nets(self):
        return len(self.nets)

    # === Compile ===

    def compile(
        self,
        optimizer,
        loss=None,
        metrics=None,
        *,
        lr_scales=None,
        run_eagerly=False,
        steps_per_execution=1,
        jit_compile="auto",
        auto_scale_loss=True,
    ):
        """Sets each net's optimizer, the loss and the per-net metrics.

        Args:
            optimizer: one optimizer (instance or name), copied once per
                net through its config (the instance passed is a template
                and is not trained), or a list of N distinct optimizers,
                one per net.
            loss: a Keras loss applied to every net's outputs; default:
                cross-entropy (`from_logits` as the model's), sparse or
                categorical by the labels' rank, as the trainer's.
            metrics: extra `keras.metrics.Metric` instances; each is copied
                per net and logged as `net_<i>_<name>`.
            lr_scales: N factors on the copied optimizer's learning rate
                (float or schedule), e.g. `difflr_scales(N)`; only with a
                single `optimizer`.
            run_eagerly, steps_per_execution, jit_compile, auto_scale_loss:
                as in `keras.Model.compile` (`auto_scale_loss` wraps every
                net's optimizer in a `LossScaleOptimizer` under
                mixed_float16).
        """
        n = self.num_nets
        if isinstance(optimizer, (list, tuple)):
            if lr_scales is not None:
                raise ValueError(
                    "lr_scales scales one optimizer copied per net; with a "
                    "list of optimizers set each one's rate. Received: "
                    f"lr_scales={lr_scales!r}"
                )
            if len(optimizer) != n:
                raise ValueError(
                    f"optimizer: one per net ({n}) or one to copy. Received: "
                    f"len(optimizer)={len(optimizer)}"
                )
            opts = [keras.optimizers.get(o) for o in optimizer]
            if len({id(o) for o in opts}) != n:
                raise ValueError(
                    "optimizer: the list holds one optimizer more than "
                    "once; each net needs its own (its own slots and step)"
                )
        else:
            if optimizer is None:
                raise ValueError(
                    "GraftingModel.compile needs an optimizer. Received: "
                    "optimizer=None"
                )
            scales = [1.0] * n if lr_scales is None else list(lr_scales)
            if len(scales) != n or not all(s > 0 for s in scales):
                raise ValueError(
                    f"lr_scales must be {n} factors > 0, one per net. "
                    f"Received: lr_scales={lr_scales!r}"
                )
            template = keras.optimizers.get(optimizer)
            opts = optimizers_lib.per_net(template, scales)
        if auto_scale_loss and self.dtype_policy.name == "mixed_float16":
            opts = optimizers_lib.loss_scaled(opts)
        self.optimizers = opts
        for net, opt in zip(self.nets, self.optimizers):
            opt.build(net.trainable_variables)
        self.loss_fn = None if loss is None else _loss_object(loss)
        self._default_losses = (
            keras.losses.SparseCategoricalCrossentropy(
                from_logits=self.from_logits
            ),
            keras.losses.CategoricalCrossentropy(from_logits=self.from_logits),
        )
        extra = list(metrics or [])
        if not all(isinstance(m, keras.metrics.Metric) for m in extra):
            raise ValueError(
                "metrics must be keras.metrics.Metric instances (each is "
                f"copied per net). Received: metrics={metrics!r}"
            )
        self._mean_loss = keras.metrics.Mean(name="loss")
        self._net_metrics = []
        for i in range(n):
            own = [
                keras.metrics.Mean(name=f"net_{i}_loss"),
                keras.metrics.Mean(name=f"net_{i}_accuracy"),
            ]
            own += [_copy_metric(m, f"net_{i}_{m.name}") for m in extra]
            self._net_metrics.append(own)
        self._ensemble_accuracy = keras.metrics.Mean(name="ensemble_accuracy")
        self._own_metrics = (
            [self._mean_loss]
            + [m for own in self._net_metrics for m in own]
            + [self._ensemble_accuracy]
        )
        # Keras' own optimizer/loss/metrics stay unset: each net has its
        # own, and Keras would otherwise build one optimizer over all nets.
        super().compile(
            optimizer=None,
            run_eagerly=run_eagerly,
            steps_per_execution=steps_per_execution,
            jit_compile=jit_compile,
            auto_scale_loss=False,
        )

    @property
    def metrics(self):
        # Only this model's metrics: the nets' own (if they were compiled
        # on their own) would otherwise be reset and logged with ours.
        return list(self._own_metrics)

    # === Steps ===

    def call(self, inputs, training=False):
        outputs = [net(inputs, training=training) for net in self.nets]
        return self._ensemble(outputs)

    def _ensemble(self, outputs):
        outputs = [tf.cast(o, tf.float32) for o in outputs]
        if self.from_logits:
            outputs = [tf.nn.softmax(o) for o in outputs]
        return tf.add_n(outputs) / float(len(outputs))

    def _net_loss(self, net, y, outputs, sample_weight):
        if self.loss_fn is not None:
            fn = self.loss_fn
        else:
            fn = self._default_losses[1 if _one_hot(y, outputs) else 0]
        loss = fn(y, tf.cast(outputs, tf.float32), sample_weight)
        if net.losses:
            # As Keras' fit: regularisation losses, scaled like the loss
            # for the replicas' gradient sum.
            extra = tf.add_n([tf.cast(x, tf.float32) for x in net.losses])
            loss += extra / _replicas()
        return loss

    def _batches(self, data):
        """One `(x, y, sample_weight)` per net from a step's data."""
        keys = [stream_key(i) for i in range(self.num_nets)]
        if isinstance(data, dict) and any(k.startswith("net_") for k in data):
            if sorted(data) != sorted(keys):
                raise ValueError(
                    f"Per-net data must have keys {keys} (per_net_dataset "
                    f"of {self.num_nets} datasets). Received keys: "
                    f"{sorted(data)}"
                )
            return [
                keras.utils.unpack_x_y_sample_weight(data[k]) for k in keys
            ]
        return [keras.utils.unpack_x_y_sample_weight(data)] * self.num_nets

    def _update_metrics(self, i, loss, y, outputs, sample_weight):
        net_loss, net_accuracy, *extra = self._net_metrics[i]
        count = tf.shape(outputs)[0]
        net_loss.update_state(loss, sample_weight=count)
        # Equal counts for every net: the mean over nets and examples.
        self._mean_loss.update_state(loss, sample_weight=count)
        net_accuracy.update_state(
            _accuracy(y, outputs), sample_weight=sample_weight
        )
        for m in extra:
            m.update_state(y, outputs, sample_weight=sample_weight)

    def _logs(self, with_ensemble):
        # The ensemble accuracy is the last of `_own_metrics`.
        metrics = self._own_metrics[: None if with_ensemble else -1]
        return {m.name: m.result() for m in metrics}

    def train_step(self, data):
        strategy = tf.distribute.get_strategy()
        for i, (net, opt, (x, y, sw)) in enumerate(
            zip(self.nets, self.optimizers, self._batches(data))
        ):
            with tf.GradientTape() as tape:
                outputs = net(x, training=True)
                loss = self._net_loss(net, y, outputs, sw)
                scaled = opt.scale_loss(loss)
            grads = tape.gradient(scaled, net.trainable_variables)
            opt.apply_gradients(zip(grads, net.trainable_variables))
            trainer_lib.sync_statistics(net, strategy)
            self._update_metrics(i, loss * _replicas(), y, outputs, sw)
        self.global_step.assign_add(1)
        return self._logs(with_ensemble=False)

    def test_step(self, data):
        if isinstance(data, dict) and any(k.startswith("net_") for k in data):
            raise ValueError(
                "evaluate/validation runs every net on the same batches: "
                "pass (x, y) data, not per_net_dataset"
            )
        x, y, sw = keras.utils.unpack_x_y_sample_weight(data)
        outputs = []
        for i, net in enumerate(self.nets):
            out = net(x, training=False)
            loss = self._net_loss(net, y, out, sw)
            self._update_metrics(i, loss * _replicas(), y, out, sw)
            outputs.append(out)
        self._ensemble_accuracy.update_state(
            _accuracy(y, self._ensemble(outputs)), sample_weight=sw
        )
        return self._logs(with_ensemble=True)

    # === Fit ===

    def fit(self, *args, callbacks=None, **kwargs):
        """`keras.Model.fit` (`callbacks` by keyword) with a new
        `GraftCallback`, `self.graft_callback`, appended."""
        if self.optimizers is None:
            raise ValueError(
                "GraftingModel needs compile(optimizer=...) before fit"
            )
        self.graft_callback = GraftCallback(
            self.every_epochs, self.every_steps
        )
        callbacks = list(callbacks or []) + [self.graft_callback]
        history = super().fit(*args, callbacks=callbacks, **kwargs)
        for net, opt in zip(self.nets, self.optimizers):
            # EMA optimizers (`use_ema`) write their averages back here,
            # as Keras' fit does for its one optimizer.
            opt.finalize_variable_values(net.trainable_variables)
        return history


def _replicas():
    # Keras losses divide by the replicas in sync (the replicas' gradients
    # are summed); the logged loss is multiplied back.
    return float(tf.distribute.get_strategy().num_replicas_in_sync)


def _one_hot(y, outputs):
    """Whether labels are one-hot (rank and width of the outputs)."""
    return (
        len(y.shape) == len(outputs.shape)
        and y.shape[-1] == outputs.shape[-1]
    )


def _copy_metric(metric, name):
    return type(metric).from_config({**metric.get_config(), "name": name})


def _accuracy(y, outputs):
    """Per-example top-1 hits (1.0 / 0.0): argmax against the labels."""
    if _one_hot(y, outputs):
        return keras.metrics.categorical_accuracy(y, outputs)
    return keras.metrics.sparse_categorical_accuracy(y, outputs)


def _loss_object(loss):
    loss = keras.losses.get(loss)
    if isinstance(loss, keras.losses.Loss):
        return loss
    if callable(loss):
        return keras.losses.LossFunctionWrapper(loss)
    raise ValueError(f"loss is not a Keras loss. Received: loss={loss!r}")

