"""LW-DNA on your own model: `derive_widths(model, data)`.

The LW-DNA job (`tfgraft.lwdna.job.LWDNA`) widens a zoo network by name;
`derive_widths` runs the same steps (METHODS §4.3) on any functional CNN,
from its layer graph: every `Conv2D` widened (`tfgraft.surgery.rebuild`;
the RGB input and the logits keep theirs) and made a `HyperConv2D` on the
latents of `graph_latent_plan`, the short search (`shrink.run_search`),
the masks at the threshold that meets a DHP FLOPs budget (`shrink.shrink`;
default: the original model's), and the original graph rebuilt with the
kept widths and the weights generated from the masked latents. What
differs from the job (your layers' settings, plain batches, another draw
order of the latents): README.md, "EKG and LW-DNA on your own model".
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from tfgraft import complexity
from tfgraft import graph as graph_lib
from tfgraft import surgery
from tfgraft.data import model_arrays
from tfgraft.lwdna import hypernet as hypernet_lib
from tfgraft.lwdna import shrink as shrink_lib
from tfgraft.lwdna.hypernet import RGB
from tfgraft.lwdna.hypernet import LWDNAError


@dataclasses.dataclass
class DeriveResult:
    """What `derive_widths` returns.

    Attributes:
        model: the derived network (the original graph and layer names,
            per-layer widths, weights inherited from the hypernetwork).
        filters: `{Conv2D layer name: filters}` of the derived network
            (every conv); `tfgraft.surgery.rebuild(model, filters=...)`
            rebuilds it from the original model.
        widths: `{latent key: kept channels}` per channel group (keys:
            the group's first conv, `"rgb"` for the input).
        widened_filters: `{Conv2D layer name: filters}` after widening.
        flops: DHP-convention FLOPs `{"original", "widened", "derived"}`.
        params: DHP-convention params (conv kernels and classifier, no
            BN), same keys.
        ratio: the targeted FLOPs of the derived / widened network.
        threshold: the `ThresholdResult` of the binary search on `pt`.
        masks: `{latent key: boolean mask}` over the widened channels.
        scores: `{latent key: channel scores}`.
        search: the `SearchState` of the SGD steps.
        hypernet: the `HyperNet` (widened, after the search).
    """

    model: keras.Model
    filters: dict
    widths: dict
    widened_filters: dict
    flops: dict
    params: dict
    ratio: float
    threshold: shrink_lib.ThresholdResult
    masks: dict
    scores: dict
    search: shrink_lib.SearchState
    hypernet: hypernet_lib.HyperNet


def _fail(message):
    raise LWDNAError(message)


def _check_number(name, value, low, high, low_open=True):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (low < value if low_open else low <= value) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        _fail(
            f"{name} must be in {bracket}{low}, {high}]. Received: "
            f"{name}={value!r}"
        )


def _dataset(data, model, batch_size, seed):
    """A repeated dataset of `(float32 images, int32 labels)` batches."""
    if isinstance(data, tf.data.Dataset):
        return data.repeat()
    if not isinstance(data, (tuple, list)):
        _fail(
            "data must be (images, labels) arrays or a tf.data.Dataset of "
            f"such batches. Received: {type(data).__name__}"
        )
    images, labels = model_arrays.check_labeled_images(
        "data", data, model, LWDNAError
    )
    if images.shape[0] < batch_size:
        _fail(
            f"batch_size must be <= the number of images "
            f"({images.shape[0]}). Received: batch_size={batch_size}"
        )
    ds = tf.data.Dataset.from_tensor_slices(
        (images.astype(np.float32), labels.astype(np.int32))
    )
    ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    return ds.repeat().batch(batch_size, drop_remainder=True)


def _hyper_factory(plan, latents, embedding_dim):
    def factory(layer, config):
        if layer.name not in plan.conv_latents:
            return None
        return hypernet_lib.hyper_conv(plan, latents, embedding_dim, **config)

    return factory


def derive_widths(
    model,
    data,
    *,
    widen=2.0,
    flops_budget=None,
    remain_percentage=0.4,
    linear_percentage=0.45,
    classifier_input="linear",
    importance="value",
    grad_normalize=False,
    embedding_dim=8,
    steps=2,
    batch_size=64,
    learning_rate=0.1,
    momentum=0.9,
    weight_decay=1e-4,
    min_channels=shrink_lib.MIN_CHANNELS,
    seed=0,
    name=None,
):
    """Derives LW-DNA widths for a functional CNN at its own FLOPs.

    Args:
        model: functional (or built `Sequential`) Keras CNN, channels
            last, raw images in, logits out, built from `Conv2D`
            (groups 1), BN, channel-wise layers and one `Dense` classifier
            after global pooling. Only its architecture is used.
        data: `(images, labels)` arrays (shuffled into batches of
            `batch_size` with `seed`) or a `tf.data.Dataset` of
            `(images, labels)` batches, for the search steps.
        widen: width multiplier of every conv before shrinking (> 1; the
            reference: 2).
        flops_budget: DHP FLOPs of the derived network; default the
            original model's (conv and classifier MACs).
        remain_percentage: share of each group kept at least (-1: the
            reference's fixed `min_channels`).
        linear_percentage: share of the classifier-input group kept at
            least.
        classifier_input: `"linear"` (prune it down to
            `linear_percentage`) or `"keep"` (never prune it).
        importance: `"value"` (`|latent|`) or `"grad"` (`|dL/dlatent|`).
        grad_normalize: divide gradients by their max (`"grad"` only).
        embedding_dim: hypernetwork embedding dimension.
        steps: SGD steps of the search (the reference: 2).
        batch_size: search batch (the reference: 64).
        learning_rate, momentum, weight_decay: the search's SGD.
        min_channels: the reference's `mc`.
        seed: seeds the latents, the hypernetwork and the batches.
        name: name of the derived model (default `<model name>_lwdna`).

    Returns:
        A `DeriveResult`.

    Raises:
        LWDNAError: a bad argument (the message names it) or a model the
            hypernetwork cannot express (names the layer).
        tfgraft.graph.GraphError: `model` is not a functional model.
    """
    graph_lib.functional_of(model)
    _check_number("widen", widen, 1.0, 64.0, low_open=False)
    if remain_percentage != -1:
        _check_number("remain_percentage", remain_percentage, 0.0, 1.0)
    _check_number("linear_percentage", linear_percentage, 0.0, 1.0)
    for arg, value in (
        ("steps", steps),
        ("batch_size", batch_size),
        ("embedding_dim", embedding_dim),
        ("min_channels", min_channels),
    ):
        if isinstance(value, bool) or int(value) != value or value < 1:
            _fail(f"{arg} must be an int >= 1. Received: {arg}={value!r}")
    for arg, value, choices in (
        ("classifier_input", classifier_input, shrink_lib.CLASSIFIER_INPUTS),
        ("importance", importance, shrink_lib.IMPORTANCES),
    ):
        if value not in choices:
            _fail(
                f"{arg} must be one of {', '.join(choices)}. Received: "
                f"{arg}={value!r}"
            )
    plan = hypernet_lib.graph_latent_plan(model)
    # Seeds the batches' shuffle too (tf.data uses the global seed).
    keras.utils.set_random_seed(seed)
    dataset = _dataset(data, model, batch_size, seed)

    # === Widen and build the hypernetwork ===
    original = complexity.count(model, "dhp")
    convs = {n: model.get_layer(n).filters for n in plan.conv_latents}
    widened_filters = {
        n: max(1, int(np.floor(f * widen + 0.5))) for n, f in convs.items()
    }
    sizes = {RGB: int(model.inputs[0].shape[-1])}
    for conv, (_, key_out) in plan.conv_latents.items():
        sizes[key_out] = widened_filters[conv]
    latents = hypernet_lib.make_latents(plan.keys(), sizes)
    hyper_model = surgery.rebuild(
        model,
        filters=widened_filters,
        layer_factory=_hyper_factory(plan, latents, int(embedding_dim)),
        name="hypernet",
    )
    hypernet = hypernet_lib.HyperNet(hyper_model, latents, plan, None, None)
    table = shrink_lib.FlopsTable(hyper_model, plan)
    budget = original.flops if flops_budget is None else flops_budget
    if not 0 < budget <= table.total:
        _fail(
            f"flops_budget must be in (0, {table.total}] (the widened "
            f"network's DHP FLOPs). Received: flops_budget={budget}"
        )
    ratio = budget / table.total

    # === Search, scores, masks ===
    strategy = tf.distribute.get_strategy()
    state = shrink_lib.run_search(
        hypernet,
        iter(strategy.experimental_distribute_dataset(dataset)),
        strategy=strategy,
        steps=int(steps),
        global_batch_size=int(batch_size),
        learning_rate=learning_rate,
        momentum=momentum,
        weight_decay=weight_decay,
    )
    shrunk = shrink_lib.shrink(
        table,
        plan,
        state,
        kind=importance,
        grad_normalize=grad_normalize,
        ratio=ratio,
        remain_percentage=remain_percentage,
        linear_percentage=linear_percentage,
        min_channels=int(min_channels),
        classifier_input=classifier_input,
    )

    # === Derive ===
    widths = {k: int(np.sum(m)) for k, m in shrunk.masks.items()}
    filters = {
        conv: widths[key_out]
        for conv, (_, key_out) in plan.conv_latents.items()
    }
    derived = surgery.rebuild(
        model, filters=filters, name=name or f"{model.name}_lwdna"
    )
    shrink_lib.assign_weights(
        derived, shrink_lib.derive_weights(hypernet, shrunk.masks)
    )
    costs = {
        "original": original,
        "widened": complexity.count(hyper_model, "dhp"),
        "derived": complexity.count(derived, "dhp"),
    }
    return DeriveResult(
        model=derived,
        filters=filters,
        widths=widths,
        widened_filters=widened_filters,
        flops={k: int(c.flops) for k, c in costs.items()},
        params={k: int(c.params) for k, c in costs.items()},
        ratio=ratio,
        threshold=shrunk.search,
        masks=shrunk.masks,
        scores=shrunk.scores,
        search=state,
        hypernet=hypernet,
    )
