"""Stripe-wise pruning of your own Keras model with plain `model.fit`.

Three steps, in the shape of TF Model Optimization's pruning API
(`prune_low_magnitude` -> `fit` -> `strip_pruning`):

1. `prune_stripes(model, sr=..., threshold=...)`: a `StripeModel` copy
   whose `Conv2D` layers are `StripeConv2D`s (same function and names);
2. `model.compile(optimizer=...)` then `model.fit(...)`: every step
   applies `skeleton.SkeletonUpdate` (the code `StripeTrainer` runs)
   between backward and the optimizer step;
3. `strip_stripes(model)`: the compact model the stripe job exports
   (`strip_dense`, the job's path), with FLOPs/params before and after.

Why an optimizer wrapper and not a regularizer plus a callback: the
update masks the skeleton *gradient* too, so masked entries get no
momentum or weight-decay step; an L1 `kernel_regularizer` and a
`on_train_batch_begin` mask cannot do that (and the callback would mask
before the forward pass, where the reference masks after the backward
pass). Wrapping `apply_gradients` keeps everything else `fit` does (loss,
metrics, callbacks, loss scaling, `jit_compile`, `tf.distribute`).
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from tfgraft import graph as graph_lib
from tfgraft.layers import stripe_conv
from tfgraft.layers.stripe_conv import StripeConv2D
from tfgraft.stripe import flops_target
from tfgraft.stripe import prune as prune_lib
from tfgraft.stripe import skeleton as skeleton_lib
from tfgraft.stripe.flops_target import _check_nonnegative
from tfgraft.stripe.skeleton import StripePruningError

CONVENTIONS = ("pff", "macs")


@keras.saving.register_keras_serializable(package="tfgraft")
class StripeModel(keras.Model):
    """A functional model whose `fit` applies the Filter Skeleton update.

    Build it with `prune_stripes`. It is a functional `keras.Model` (same
    graph, call, saving) that remembers `sr` and `threshold`; `compile`
    wraps the optimizer (after Keras added any `LossScaleOptimizer`) in a
    `SkeletonOptimizer`, so every training step of `fit` (or of
    `train_on_batch`) runs `skeleton.SkeletonUpdate` between backward and
    the optimizer step, which then applies its own step (momentum, weight
    decay) to the masked gradients, exactly as in `StripeTrainer`.

    `model.optimizer` is the wrapper; the optimizer passed to `compile` is
    `model.optimizer.inner_optimizer` and is what `model.save` records.

    Args:
        inputs, outputs, name: as for a functional `keras.Model`.
        sr: L1 strength on the skeleton (the paper's alpha), >= 0.
        threshold: skeleton magnitude at or below which a stripe is dead
            during training, >= 0; also `strip_stripes`'s default
            pruning threshold.
        **kwargs: further functional `keras.Model` arguments.
    """

    def __init__(self, inputs, outputs, name=None, *, sr, threshold, **kwargs):
        sr = _check_nonnegative("sr", sr)
        threshold = _check_nonnegative("threshold", threshold)
        super().__init__(inputs, outputs, name=name, **kwargs)
        self.sr = sr
        self.threshold = threshold

    def compile(self, optimizer="rmsprop", **kwargs):
        if isinstance(optimizer, SkeletonOptimizer):
            # Never two updates per step.
            optimizer = optimizer.inner_optimizer
        super().compile(optimizer=optimizer, **kwargs)
        update = skeleton_lib.SkeletonUpdate(
            self, sr=self.sr, threshold=self.threshold
        )
        self.optimizer = SkeletonOptimizer(self.optimizer, update)

    def get_compile_config(self):
        # The optimizer given to `compile` (not the wrapper) is recorded.
        return super().get_compile_config()

    def compile_from_config(self, config):
        # Keras skips a custom `compile` on load unless both compile-config
        # methods are overridden; this one re-wraps the optimizer.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def get_config(self):
        config = super().get_config()
        config.update({"sr": self.sr, "threshold": self.threshold})
        return config


class SkeletonOptimizer(keras.optimizers.Optimizer):
    """Wraps an optimizer: the skeleton update runs before each of its steps.

    `apply` hands the per-replica gradients to `update.transform` (with
    the replicas whose gradients the inner optimizer sums) and applies the
    result with the inner optimizer. Learning rate, iterations, loss
    scaling and state are the inner optimizer's. `StripeModel.compile`
    builds it; it is not meant to be serialized on its own (it holds the
    model's variables).

    Args:
        inner_optimizer: the optimizer that applies the gradients.
        update: a `skeleton.SkeletonUpdate` of the model being trained.
        name: optimizer name.
    """

    def __init__(self, inner_optimizer, update, name="skeleton_optimizer"):
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = inner_optimizer
        # A plain object: the optimizer must not track the model's
        # variables it holds as its own.
        self.update = update

    def build(self, var_list):
        self.inner_optimizer.build(var_list)
        super().build(var_list)

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    def scale_loss(self, loss):
        return self.inner_optimizer.scale_loss(loss)

    def apply(self, grads, trainable_variables=None):
        if trainable_variables is None:
            variables = self._trainable_variables
        else:
            variables = list(trainable_variables)
            if not self.built:
                self.build(variables)
        # `fit` computes per-replica gradients of a loss Keras scales by
        # 1 / replicas (`scale_loss_for_distribution` reads the same
        # strategy), and the inner optimizer sums them over the replicas.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        grads = self.update.transform(
            variables, grads, self.inner_optimizer, replicas
        )
        self.inner_optimizer.apply(grads, trainable_variables)

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    def get_config(self):
        return {
            "name": self.name,
            "inner_optimizer": keras.optimizers.serialize(
                self.inner_optimizer
            ),
            "sr": self.update.sr,
            "threshold": self.update.threshold,
        }


# === Wrapping ===


def prune_stripes(model, *, sr, threshold, exclude=()):
    """A copy of `model` ready for stripe pruning under `model.fit`.

    Every `keras.layers.Conv2D` (the class itself, not subclasses) becomes
    a `StripeConv2D` with the same configuration, name, kernel and bias and
    a Filter Skeleton of ones, so the copy computes what `model` computes;
    every other layer is copied with its weights. `StripeConv2D` layers
    already in `model` keep their skeletons. Compile and fit the result
    like any Keras model; `strip_stripes` then compacts it.

    Scope: functional and built `Sequential` models, channels-last, without
    nested models (the method needs the layer graph to find BNs, residual
    streams and the layers reading each conv). Grouped and dilated convs
    are not supported by `StripeConv2D`; name them in `exclude` to keep
    them plain `Conv2D` layers (their filters are then never removed, and
    a conv feeding a grouped conv keeps its filters too).

    Args:
        model: a functional or built `Sequential` `keras.Model`.
        sr: L1 strength on the skeleton (the paper's alpha, e.g. 1e-5 with
            SGD at learning rate 0.1), >= 0.
        threshold: skeleton magnitude at or below which a stripe is dead
            during training and at `strip_stripes` (the reference's 0.01),
            >= 0. The update runs only when `sr` and `threshold` are > 0.
        exclude: names of `Conv2D` layers to leave as they are.

    Returns:
        A `StripeModel` named as `model`, with `model`'s layer names.

    Raises:
        ValueError: a bad `sr`/`threshold`, an unknown name in `exclude`, a
            conv that cannot be wrapped (the message names it), a
            subclassed or nested model (`tfgraft.graph.GraphError`), or no
            conv to prune (`StripePruningError`).

    Example:

    >>> inputs = keras.Input((8, 8, 4))
    >>> x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    >>> x = keras.layers.GlobalAveragePooling2D()(x)
    >>> net = keras.Model(inputs, keras.layers.Dense(2)(x))
    >>> wrapped = prune_stripes(net, sr=1e-4, threshold=0.01)
    >>> type(wrapped.get_layer("conv")).__name__
    'StripeConv2D'
    """
    if not isinstance(model, keras.Model):
        raise ValueError(
            "prune_stripes needs a keras.Model. Received: "
            f"model={type(model).__name__}"
        )
    sr = _check_nonnegative("sr", sr)
    threshold = _check_nonnegative("threshold", threshold)
    # Refuses subclassed, unbuilt Sequential and nested models by name.
    graph_lib.ordered_nodes(model)
    functional = graph_lib.functional_of(model)
    exclude = set([exclude] if isinstance(exclude, str) else exclude)
    names = {layer.name for layer in functional.layers}
    unknown = sorted(exclude - names)
    if unknown:
        raise ValueError(
            f"exclude names layer '{unknown[0]}', which model "
            f"'{model.name}' does not have. Received: exclude="
            f"{sorted(exclude)}"
        )
    wrapped = set()
    for layer in functional.layers:
        if type(layer) is not keras.layers.Conv2D or layer.name in exclude:
            continue
        reason = stripe_conv.unsupported(layer)
        if reason is not None:
            raise ValueError(
                f"Layer '{layer.name}' (Conv2D, {reason}) cannot become a "
                "StripeConv2D (groups=1, dilation_rate=1, channels_last "
                f"only); pass exclude=['{layer.name}'] to keep it a plain "
                "Conv2D."
            )
        wrapped.add(layer.name)
    has_stripes = any(isinstance(x, StripeConv2D) for x in functional.layers)
    if not wrapped and not has_stripes:
        raise StripePruningError(
            f"Model '{model.name}' has no keras.layers.Conv2D to turn into "
            "a StripeConv2D (subclasses of Conv2D and excluded layers are "
            "left as they are)."
        )

    def clone(layer):
        if layer.name in wrapped:
            return StripeConv2D.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    # New inputs named as the old ones (clone_model would rename them).
    input_names = {
        id(layer.output): layer.name
        for layer in functional.layers
        if isinstance(layer, keras.layers.InputLayer)
    }
    inputs = [
        keras.Input(
            batch_shape=t.shape, dtype=t.dtype, name=input_names.get(id(t))
        )
        for t in functional.inputs
    ]
    copy = keras.models.clone_model(
        functional,
        input_tensors=inputs[0] if len(inputs) == 1 else inputs,
        clone_function=clone,
    )
    for old in functional.layers:
        new = copy.get_layer(old.name)
        if old.name in wrapped:
            # Kernel and bias as they are; the skeleton starts at ones.
            ones = np.ones(new.filter_skeleton.shape, "float32")
            new.set_weights([*old.get_weights(), ones])
        elif old.weights:
            new.set_weights(old.get_weights())
    return StripeModel(
        copy.input, copy.output, name=model.name, sr=sr, threshold=threshold
    )


# === Stripping ===


@dataclasses.dataclass(frozen=True)
class StripResult:
    """Output of `strip_stripes`: the compact model and its figures.

    Attributes:
        model: the compact Keras model (plain functional, `CompactStripeConv2D`
            layers), or the dense copy when nothing was pruned.
        masked: the hard-masked dense copy (its logits equal `model`'s).
        threshold: the threshold pruned at (None when nothing was pruned).
        complexity: `{"pff": ..., "macs": ...}`, each `{"before", "after",
            "flops_reduction_pct", "params_reduction_pct"}` with
            `{"flops", "params"}` figures, as the stripe job reports them.
        layers: `prune.LayerStripes` of every pruned stripe conv.
        removed_blocks: `(add_name, conv_name)` of residual branches cut.
        target: the `flops_target.FlopsCut` when a FLOPs cut was asked.
    """

    model: keras.Model
    masked: keras.Model | None
    threshold: float | None
    complexity: dict
    layers: tuple = ()
    removed_blocks: tuple = ()
    target: flops_target.FlopsCut | None = None

    def as_dict(self):
        """The figures (no models), as in the job's `report.json`."""
        return {
            "prune_threshold": self.threshold,
            "complexity": self.complexity,
            **prune_lib.stripe_totals(self.layers),
            "layers": [dataclasses.asdict(x) for x in self.layers],
            "removed_blocks": [list(b) for b in self.removed_blocks],
            "target": None if self.target is None else self.target.as_dict(),
        }


def strip_stripes(
    model,
    *,
    threshold=None,
    target_flops_cut=None,
    tolerance=0.02,
    formulation="auto",
    jit_compile=False,
    dead_branches="constant",
):
    """Prunes a trained stripe model once and compacts it, as the job does.

    `strip_dense` of a single-device copy of `model` (never changed
    itself). With `threshold=0` and no target nothing is pruned and the
    dense copy is returned, as the stripe job exports it.

    Args:
        model: a trained `StripeModel` (from `prune_stripes`) or any
            functional model with `StripeConv2D` layers.
        threshold: stripes with `|FS| <= threshold` are pruned; default the
            `StripeModel`'s training threshold (required for other models).
        target_flops_cut: optional fraction of the `pff` FLOPs to remove,
            in (0, 1): prune at the threshold at or above `threshold` that
            removes it (`flops_target.threshold_for_flops_cut`; stripes the
            training masked stay pruned).
        tolerance: accepted distance to `target_flops_cut`.
        formulation, jit_compile, dead_branches: as `prune.compact`.

    Returns:
        A `StripResult`.

    Raises:
        ValueError: bad arguments (the message names the argument).
        StripePruningError: the model cannot be compacted at the threshold
            (a conv without stripes that nothing bypasses).
    """
    if threshold is None:
        if not isinstance(model, StripeModel):
            raise ValueError(
                f"Model '{getattr(model, 'name', model)}' is not a "
                "StripeModel: pass threshold=... . Received: threshold=None"
            )
        threshold = model.threshold
    threshold = _check_nonnegative("threshold", threshold)
    if target_flops_cut is not None:
        # Validates target_flops_cut/tolerance before any copy is made.
        flops_target._check_fraction("target_flops_cut", target_flops_cut)
        flops_target._check_fraction("tolerance", tolerance, low_open=False)
    # A plain functional copy (call this outside a strategy scope).
    plain = keras.Model(model.input, model.output, name=model.name)
    return strip_dense(
        prune_lib.copy_model(plain),
        threshold,
        target_flops_cut=target_flops_cut,
        tolerance=tolerance,
        formulation=formulation,
        jit_compile=jit_compile,
        dead_branches=dead_branches,
    )


def strip_dense(
    dense, threshold, *, target_flops_cut=None, tolerance=0.02, **options
):
    """The prune path of `strip_stripes` and of the stripe job.

    On a plain single-device functional `dense`, never changed (the job
    prunes it again at other cuts): the threshold search when
    `target_flops_cut` is set; a copy hard-masked at the threshold
    (`prune.hard_mask`: dead stripes and the BN channels of filters
    without stripes to 0); `prune.compact(masked, threshold, **options)`;
    FLOPs/params before and after in the `pff` (the reference's counter)
    and `macs` conventions. Arguments as `strip_stripes`'s, unchecked.

    Returns:
        A `StripResult`.
    """
    before = {c: prune_lib.cost(dense, c) for c in CONVENTIONS}

    def reductions(after):
        return {c: prune_lib.reduction(before[c], after[c]) for c in before}

    if threshold <= 0 and not target_flops_cut:
        return StripResult(
            dense, masked=None, threshold=None, complexity=reductions(before)
        )
    target = None
    if target_flops_cut:
        target = flops_target.threshold_for_flops_cut(
            dense, target_flops_cut, tolerance, min_threshold=threshold
        )
        threshold = target.threshold
    masked = prune_lib.hard_mask(dense, threshold)
    result = prune_lib.compact(masked, threshold, **options)
    after = {c: prune_lib.cost(result.model, c) for c in CONVENTIONS}
    return StripResult(
        model=result.model,
        masked=masked,
        threshold=threshold,
        complexity=reductions(after),
        layers=result.layers,
        removed_blocks=result.removed_blocks,
        target=target,
    )
