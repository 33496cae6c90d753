"""Shrinking a widened hypernetwork to a FLOPs budget (METHODS.md §4.3).

In the order the job uses them: `run_search` (the short search,
`search_steps` SGD steps), `importance` (channel scores), `mask_floors`
and `compute_masks` (the masks at a pruning threshold `pt`; RGB and, with
`classifier_input="keep"`, the classifier input are never pruned),
`FlopsTable` and `search_threshold` (the reference's binary search on
`pt`), `shrink` (a search's scores to masks at the budget), then
`derived_config` and `derive_weights` (the plain network).

`zero_pruned_channels` builds the reference the derived network must equal:
the widened network with every pruned channel's BN output set to zero.
"""

import dataclasses
import time

import keras
import numpy as np
import tensorflow as tf

from tfgraft import complexity
from tfgraft import models
from tfgraft import surgery
from tfgraft.layers.hyper_conv import HyperConv2D
from tfgraft.lwdna.hypernet import RGB
from tfgraft.lwdna.hypernet import LWDNAError
from tfgraft.training import optimizers as optimizers_lib
from tfgraft.training import trainer as trainer_lib

IMPORTANCES = ("value", "grad")
CLASSIFIER_INPUTS = ("linear", "keep")

# The reference's binary search constants (`main_hh_grad.py`).
THRESHOLD_START = 5e-3
THRESHOLD_STEP = 0.01
RATIO_TOLERANCE = 1e-3
MAX_ITERATIONS = 100
MIN_CHANNELS = 4


def search_steps(epochs_grad, steps_per_epoch):
    """Optimizer steps of the search: `(epochs_grad - 1) * iters + 2`.

    The reference trains `epochs_grad - 1` full epochs and stops the last
    one after its second batch.
    """
    if epochs_grad < 1 or steps_per_epoch < 1:
        raise ValueError(
            "epochs_grad and steps_per_epoch must be >= 1. Received: "
            f"epochs_grad={epochs_grad}, steps_per_epoch={steps_per_epoch}"
        )
    return (epochs_grad - 1) * steps_per_epoch + 2


# === Channel scores and masks ===


def importance(value, grad=None, kind="value", grad_normalize=False):
    """Channel scores of one latent vector.

    Args:
        value: the latent vector after the search.
        grad: its loss gradient on the last search batch (`kind="grad"`).
        kind: `"value"` (`|v|`) or `"grad"` (`|dL/dv|`). The reference's
            ImageNet ResNets use `"value"` even when run with
            `--grad_prune`; its CIFAR ResNet and RegNets use `"grad"`.
        grad_normalize: divide the gradient by its maximum first (the
            reference divides by the signed max, not the abs-max; a
            non-positive max leaves the gradient unchanged here).

    Returns:
        float64 numpy scores, one per channel.
    """
    if kind not in IMPORTANCES:
        raise LWDNAError(
            "importance {kind}: must be one of " + ", ".join(IMPORTANCES),
            kind=kind,
        )
    if kind == "value":
        return np.abs(np.asarray(value, np.float64))
    if grad is None:
        raise ValueError("importance 'grad' needs the latent gradient")
    grad = np.asarray(grad, np.float64)
    if grad_normalize and grad.size and grad.max() > 0:
        grad = grad / grad.max()
    return np.abs(grad)


def keep_floor(size, percentage, min_channels=MIN_CHANNELS):
    """`k`, the channels a mask always keeps.

    `max(floor(size * percentage), 1)`; a percentage of -1 means the
    reference's fixed minimum `min_channels`. Never more than `size`.
    """
    if percentage == -1:
        k = min_channels
    else:
        k = max(int(size * percentage), 1)
    return max(1, min(k, size))


def channel_mask(scores, threshold, floor):
    """Keeps channels with `score >= min(threshold, s_(floor))`.

    `s_(floor)` is the `floor`-th largest score, so at least `floor`
    channels survive, plus any scoring at least `threshold`. The kept set
    shrinks (never grows) as `threshold` rises.

    Returns:
        A boolean numpy mask.
    """
    scores = np.asarray(scores, np.float64)
    size = scores.shape[0]
    kth = np.partition(scores, size - floor)[size - floor]
    return scores >= min(threshold, kth)


def check_classifier_input(classifier_input):
    """Validates the classifier-input policy (`CLASSIFIER_INPUTS`).

    * `"linear"` (the default): the classifier-input stream (a ResNet's
      last stage) is pruned like every other latent but keeps at least
      `floor(C * linear_percentage)` channels. This is what the
      reference's LW-DNA entry point (`main_hh_grad.py`) does, and it is
      the only LW-DNA path the reference has: its CIFAR ResNet
      (`resnet_dhp_share.py`) is not wired to it.
    * `"keep"`: never prune it, as the reference's DHP CIFAR ResNet does.
      DHP prunes an unwidened net, where that keeps the original width; in
      LW-DNA the stream stays at the *widened* width (128 channels for
      ResNet-20 x2), the parameter-heaviest stream of the net, so at the
      same FLOPs the derived net carries about a third more parameters
      than the uniform one (and the rest of the net is squeezed to pay
      for it).
    """
    if classifier_input not in CLASSIFIER_INPUTS:
        raise LWDNAError(
            "{classifier_input}: must be one of "
            + ", ".join(CLASSIFIER_INPUTS),
            classifier_input=classifier_input,
        )
    return classifier_input


def mask_floors(
    plan,
    sizes,
    *,
    remain_percentage,
    linear_percentage,
    min_channels=MIN_CHANNELS,
    classifier_input="linear",
):
    """`k` per latent, or None for latents that are never pruned.

    Args:
        plan: the hypernet's `LatentPlan`.
        sizes: `{latent key: length}`.
        remain_percentage: share kept at least, or -1 for `min_channels`.
        linear_percentage: share of the classifier input kept at least.
        min_channels: the reference's `mc`.
        classifier_input: `"linear"` or `"keep"` (see
            `check_classifier_input`).

    Returns:
        `{latent key: int or None}`.
    """
    policy = check_classifier_input(classifier_input)
    floors = {}
    for key, size in sizes.items():
        if key == RGB:
            floors[key] = None
        elif key == plan.classifier_latent:
            if policy == "keep":
                floors[key] = None
            else:
                floors[key] = max(1, min(int(size * linear_percentage), size))
        else:
            floors[key] = keep_floor(size, remain_percentage, min_channels)
    return floors


def compute_masks(scores, floors, threshold):
    """`{latent key: boolean mask}` at pruning threshold `threshold`."""
    masks = {}
    for key, s in scores.items():
        if floors[key] is None:
            masks[key] = np.ones(len(s), bool)
        else:
            masks[key] = channel_mask(s, threshold, floors[key])
    return masks


# === FLOPs budget ===


class FlopsTable(complexity.ChannelFlops):
    """DHP-convention FLOPs of a network as a function of its latent masks.

    A `tfgraft.complexity.ChannelFlops` keyed by latent over the convs and
    the classifier (the DHP counter counts nothing else);
    `tests/lwdna/lwdna_test.py` checks it against `complexity.count` on the
    derived networks.

    Args:
        model: the widened network (hyper or plain; same counts).
        plan: its `LatentPlan`.
    """

    def __init__(self, model, plan):
        layers = {}
        for name, (key_in, key_out) in plan.conv_latents.items():
            layer = model.get_layer(name)
            c_in, c_out = int(layer.input.shape[-1]), int(layer.filters)
            layers[name] = (key_in, c_in, key_out, c_out)
        fc = model.get_layer(plan.classifier)
        # The classifier's outputs (logits) are never pruned.
        c_in, c_out = int(fc.input.shape[-1]), int(fc.units)
        layers[plan.classifier] = (plan.classifier_latent, c_in, None, c_out)
        cost = complexity.count(model, "dhp")
        self.total = int(cost.flops)
        super().__init__(cost, layers)
        if self.constant:
            raise LWDNAError(
                f"model '{model.name}' has DHP FLOPs outside its convs and "
                "classifier; the FLOPs table cannot model it."
            )

    def ratio(self, masks):
        """FLOPs of the masked network / FLOPs of the full one."""
        return self.flops({k: int(np.sum(m)) for k, m in masks.items()}) / (
            self.total
        )


@dataclasses.dataclass(frozen=True)
class ThresholdResult:
    """Outcome of `search_threshold`.

    Attributes:
        threshold: the final pruning threshold `pt`.
        ratio: FLOPs ratio at `threshold`.
        iterations: ratio evaluations in the loop (at most 100).
        converged: whether `|ratio - target| <= tolerance`.
        trace: `(pt, ratio)` of every iteration.
    """

    threshold: float
    ratio: float
    iterations: int
    converged: bool
    trace: tuple


def search_threshold(
    ratio_at,
    target,
    *,
    start=THRESHOLD_START,
    step=THRESHOLD_STEP,
    tolerance=RATIO_TOLERANCE,
    max_iterations=MAX_ITERATIONS,
):
    """The reference's `binary_search` for the pruning threshold `pt`.

    Each iteration evaluates `ratio_at(pt)` and stops when it is within
    `tolerance` of `target`; otherwise it halves `step` if the ratio
    crossed the target since the previous iteration and moves
    `pt += step` (ratio too high) or `pt = max(pt - step, 0)`. After
    `max_iterations` the last `pt` is returned as it is.

    Args:
        ratio_at: `f(pt) -> FLOPs ratio`, non-increasing in `pt`.
        target: the FLOPs ratio to reach, in (0, 1].

    Returns:
        A `ThresholdResult`.
    """
    pt = float(start)
    previous = None
    trace = []
    for iteration in range(1, max_iterations + 1):
        ratio = float(ratio_at(pt))
        trace.append((pt, ratio))
        if abs(ratio - target) <= tolerance:
            return ThresholdResult(pt, ratio, iteration, True, tuple(trace))
        above = ratio > target
        if previous is not None and above != previous:
            step /= 2.0
        pt = pt + step if above else max(pt - step, 0.0)
        previous = above
    ratio = float(ratio_at(pt))
    return ThresholdResult(
        pt,
        ratio,
        max_iterations,
        abs(ratio - target) <= tolerance,
        tuple(trace),
    )


@dataclasses.dataclass(frozen=True)
class ShrinkResult:
    """Masks at the threshold that meets the budget.

    Attributes:
        masks: `{latent key: boolean mask}`.
        scores: `{latent key: channel scores}`.
        floors: `{latent key: k or None}`.
        search: the `ThresholdResult`.
        target: the requested FLOPs ratio.
    """

    masks: dict
    scores: dict
    floors: dict
    search: ThresholdResult
    target: float


def shrink_masks(
    table,
    plan,
    scores,
    *,
    ratio,
    remain_percentage,
    linear_percentage,
    min_channels=MIN_CHANNELS,
    classifier_input="linear",
    prune_threshold=THRESHOLD_START,
):
    """Masks the latents so the FLOPs ratio meets `ratio` (steps 4-5).

    Args:
        table: `FlopsTable` of the widened network.
        plan: its `LatentPlan`.
        scores: `{latent key: channel scores}` (see `importance`).
        ratio: target FLOPs of the result / FLOPs of the widened net.
        remain_percentage, linear_percentage, min_channels,
            classifier_input: see `mask_floors`.
        prune_threshold: initial `pt`.

    Returns:
        A `ShrinkResult`.
    """
    if not 0 < ratio <= 1:
        raise LWDNAError("{ratio}: must be in (0, 1]", ratio=ratio)
    sizes = {k: len(s) for k, s in scores.items()}
    floors = mask_floors(
        plan,
        sizes,
        remain_percentage=remain_percentage,
        linear_percentage=linear_percentage,
        min_channels=min_channels,
        classifier_input=classifier_input,
    )
    result = search_threshold(
        lambda pt: table.ratio(compute_masks(scores, floors, pt)),
        ratio,
        start=prune_threshold,
    )
    masks = compute_masks(scores, floors, result.threshold)
    return ShrinkResult(masks, scores, floors, result, float(ratio))


def shrink(table, plan, state, *, kind="value", grad_normalize=False, **mask):
    """`shrink_masks` on the `importance` scores of a search's latents.

    Args:
        table, plan: as in `shrink_masks`.
        state: the `SearchState` of `run_search`.
        kind, grad_normalize: as in `importance`.
        **mask: the other `shrink_masks` arguments (`ratio`, ...).
    """
    scores = {
        key: importance(
            value, state.grads[key], kind=kind, grad_normalize=grad_normalize
        )
        for key, value in state.values.items()
    }
    return shrink_masks(table, plan, scores, **mask)


# === The search (two SGD steps) ===


class SearchTrainer(trainer_lib.Trainer):
    """Trains one hypernetwork and keeps its latents' last gradients.

    `latent_grads[key]` holds the gradient of the loss (before weight
    decay, as PyTorch's `.grad`) of latent `key` on the most recent batch,
    summed over replicas so it equals the single-device gradient.

    Args:
        net: the hypernetwork model.
        optimizer: its optimizer.
        strategy: the strategy `net` lives in.
        latents: `{key: keras.Variable}` of the hypernetwork.
        **kwargs: `Trainer` keyword arguments (`global_batch_size`, ...).
    """

    def __init__(self, net, optimizer, strategy, *, latents, **kwargs):
        super().__init__([net], [optimizer], strategy, **kwargs)
        position = {id(v): i for i, v in enumerate(net.trainable_variables)}
        self.latent_keys = list(latents)
        self._latent_index = [position[id(latents[k])] for k in latents]
        self.latent_grads = {
            key: tf.Variable(
                tf.zeros(latents[key].shape, tf.float32),
                trainable=False,
                name="grad_" + key.replace("/", "_"),
                aggregation=tf.VariableAggregation.MEAN,
            )
            for key in self.latent_keys
        }

    def transform_gradients(self, net_index, grads):
        ctx = tf.distribute.get_replica_context()
        picked = [tf.cast(grads[i], tf.float32) for i in self._latent_index]
        # Each replica's gradient covers its share of the global batch;
        # the sum is the full-batch gradient, the same on every replica.
        total = ctx.all_reduce(tf.distribute.ReduceOp.SUM, picked)
        for key, g in zip(self.latent_keys, total):
            self.latent_grads[key].assign(g)
        return grads


@dataclasses.dataclass(frozen=True)
class SearchState:
    """What the search leaves behind.

    Attributes:
        values: `{latent key: numpy vector}` after the last step.
        grads: `{latent key: numpy loss gradient}` of the last batch.
        steps: optimizer steps taken.
        loss: mean training loss over the search steps.
        seconds: wall time of the steps.
    """

    values: dict
    grads: dict
    steps: int
    loss: float
    seconds: float


def run_search(
    hypernet,
    iterator,
    *,
    strategy,
    steps,
    global_batch_size,
    learning_rate=0.1,
    momentum=0.9,
    weight_decay=1e-4,
    jit=False,
):
    """Trains the hypernetwork for `steps` SGD steps (METHODS §4.3 step 2).

    Cross-entropy, PyTorch SGD with coupled weight decay on every trainable
    tensor (latents and hypernetwork included), a constant learning rate.
    No proximal step (the reference's default).

    Args:
        hypernet: a `HyperNet` built inside `strategy.scope()`.
        iterator: a distributed iterator of `(images, labels)` batches.
        strategy: the strategy.
        steps: optimizer steps (see `search_steps`).
        global_batch_size: images per step (the reference cuts ImageNet
            batches to 64).
        learning_rate, momentum, weight_decay: SGD settings.
        jit: XLA-compile the forward/backward.

    Returns:
        A `SearchState`.
    """
    with strategy.scope():
        optimizer = optimizers_lib.TorchSGD(
            learning_rate,
            momentum=momentum,
            weight_decay=weight_decay,
            name="search_optimizer",
        )
        trainer = SearchTrainer(
            hypernet.model,
            optimizer,
            strategy,
            latents=hypernet.latents,
            global_batch_size=global_batch_size,
            jit=jit,
        )
    t0 = time.perf_counter()
    stats = trainer.train_loop([iterator], int(steps))
    seconds = time.perf_counter() - t0
    values = {
        k: keras.ops.convert_to_numpy(v).copy()
        for k, v in hypernet.latents.items()
    }
    grads = {k: v.numpy().copy() for k, v in trainer.latent_grads.items()}
    return SearchState(
        values=values,
        grads=grads,
        steps=int(keras.ops.convert_to_numpy(optimizer.iterations)),
        loss=stats[0]["loss"],
        seconds=seconds,
    )


# === Deriving the plain network ===


def derived_config(hypernet, masks):
    """The LW-DNA widths: kept channels per slot, as a `ChannelConfig`.

    The config records the hypernet's resolved preset and shortcut, so
    building it for another topology fails with a clear error.
    """
    widths = {slot: int(np.sum(masks[slot])) for slot in hypernet.config.widths}
    name = hypernet.plan.model
    kwargs = hypernet.build_kwargs
    return models.ChannelConfig(name, widths).with_topology(
        *models.resolve_topology(name, kwargs["preset"], kwargs["shortcut"])
    )


def build_derived(hypernet, config, *, model_name="derived"):
    """Builds the plain zoo network for a derived config (fresh init)."""
    return models.build_model(
        hypernet.plan.model,
        channel_config=config,
        model_name=model_name,
        **hypernet.build_kwargs,
    )


def _numpy(variable):
    return keras.ops.convert_to_numpy(variable)


def derive_weights(hypernet, masks):
    """Weights of the derived plain network, inherited from the hypernet.

    Each conv's kernel is generated from its masked latents and sliced
    hypernetwork (`HyperConv2D.materialize`), conv biases and every BN
    tensor (gamma, beta, moving statistics) are sliced by the output mask,
    the classifier's kernel rows by the classifier-input mask. The
    hypernetwork itself is dropped (the reference's
    `reset_after_searching`).

    Returns:
        `{layer name: list of numpy arrays}` in each plain layer's
        `get_weights()` order, for `assign_weights`.
    """
    plan = hypernet.plan
    weights = {}
    for layer in hypernet.model.layers:
        if isinstance(layer, HyperConv2D):
            key_in, key_out = plan.conv_latents[layer.name]
            out = masks[key_out]
            arrays = [layer.materialize(masks[key_in], out)]
            if layer.use_bias:
                arrays.append(_numpy(layer.bias)[out])
            weights[layer.name] = arrays
        elif isinstance(layer, keras.layers.BatchNormalization):
            mask = masks[plan.bn_latents[layer.name]]
            weights[layer.name] = [_numpy(w)[mask] for w in layer.weights]
        elif layer.name == plan.classifier:
            mask = masks[plan.classifier_latent]
            arrays = [_numpy(layer.kernel)[mask]]
            if layer.use_bias:
                arrays.append(_numpy(layer.bias))
            weights[layer.name] = arrays
        elif layer.weights:
            weights[layer.name] = [_numpy(w) for w in layer.weights]
    return weights


def assign_weights(model, weights):
    """Sets `derive_weights` output on the derived plain network."""
    for name, arrays in weights.items():
        layer = model.get_layer(name)
        surgery.assign(name, layer.weights, arrays, LWDNAError)


def zero_pruned_channels(hypernet, masks):
    """Zeroes every pruned channel's BN output in the widened network.

    Sets BN gamma and beta to 0 on the pruned channels of every BN (in
    inference mode its output there is then exactly 0, before any add or
    ReLU). The widened network then computes what the derived one does;
    the "derived == masked" check compares the two. Modifies `hypernet`.
    """
    for name, key in hypernet.plan.bn_latents.items():
        layer = hypernet.model.get_layer(name)
        drop = ~masks[key]
        for variable in (layer.gamma, layer.beta):
            if variable is None:
                continue
            value = _numpy(variable).copy()
            value[drop] = 0.0
            variable.assign(value)
