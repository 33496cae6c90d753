"""L1-norm filter pruning of a trained zoo network to a FLOPs target.

Li et al. rank the filters of a conv layer by the L1 norm of their kernels
(`sum |W[:, :, :, j]|`) and remove the smallest. Here the unit that is
ranked and removed is a **channel group** of the channel-dependency graph
(`tfgraft.graph`), so every layer that writes, normalises or reads the
channels stays consistent:

* a block-internal group (one conv writes it, e.g. each residual block's
  first conv, or any VGG conv) is ranked by that conv's filter norms, as
  in the paper;
* a residual-stream group (every conv writing one stage's stream: the
  stem, each block's last conv and the projection shortcut) is ranked by
  the **sum** of the filter norms of all those convs, and loses the same
  channels in all of them (`prune_streams=False` leaves streams alone:
  the paper's ResNet scheme);
* every group keeps at least one channel.

Groups that cannot lose channels without changing the function of the
rest of the net are never pruned: the model input and the logits, groups
the graph marks unprunable, and groups read by a weightless layer that
changes the channel count (the option-A shortcut zero-pads the stage-1
stream into stage 2 at fixed positions, so with `shortcut="A"` no stream
is prunable).

**One fraction for all groups.** At a pruning fraction `f`, a group of
`C` channels loses `min(C - 1, floor(f * C))` of them. Groups of the zoo
have sizes such as 16/32/64, so at `f = k/16` every group moves at once
and the FLOPs cut jumps by several percent. The search therefore walks
the individual removals in order of the fraction at which each becomes
due (`k / C` for the k-th channel of a group of `C`), groups due at the
same fraction taking their turn in slot order, and bisects on the number
of removals taken for the first whose cut (counted with
`tfgraft.complexity`, `"pff"` by default: the stripe job's convention, so
the cuts are comparable) reaches `target_flops_cut`; it keeps whichever
of that and the one before lies closer to the target, and fails unless
that is within `target_tolerance`. So all groups share one fraction `f`
(the last removal's), and each has lost `floor(f * C)` channels or, if
its turn at `f` has not come, one fewer. The cut only grows with every
removal, so the bisection is exact. Everything depends only on the
weights and the arguments (ties in norm remove the lower channel index
first).

The pruned network is a new `ChannelConfig` for the same zoo model, built
by `tfgraft.models.build_model`, into which `copy_kept_weights` copies the
kept slices: conv kernels (output and input channels), biases, BN gamma /
beta / moving statistics and the classifier's input rows.

Reference:
    Li, Kadav, Durdanovic, Samet and Graf, "Pruning Filters for Efficient
    ConvNets", ICLR 2017.
"""

import dataclasses
import fractions
import math

import keras
import numpy as np

from tfgraft import complexity
from tfgraft import errors
from tfgraft import graph as graph_lib
from tfgraft import models
from tfgraft import surgery

INTERNAL = "internal"
STREAM = "stream"


class L1PruneError(errors.ArgumentError):
    """The model or a target cannot be pruned; names the argument at fault."""


@dataclasses.dataclass(frozen=True)
class FilterGroup:
    """One prunable channel group and the L1 norms of its filters.

    Attributes:
        slot: the `ChannelConfig` width slot of the group.
        group: its id in `tfgraft.graph.analyze(model)`.
        kind: `"internal"` (one conv writes it) or `"stream"` (a residual
            stream written by several convs).
        size: channels before pruning.
        producers: conv layers writing the group (their filter norms are
            summed).
        norms: summed L1 norm of each channel's filters, shape `(size,)`.
    """

    slot: str
    group: int
    kind: str
    size: int
    producers: tuple
    norms: np.ndarray = dataclasses.field(compare=False, repr=False)

    def kept(self, removed):
        """Indices of the channels kept after removing `removed`, ascending.

        The `removed` channels of smallest summed L1 norm go; equal norms
        lose the lower channel index first.
        """
        if not 0 <= removed < self.size:
            raise L1PruneError(
                f"removed must be in [0, {self.size - 1}] for slot "
                f"'{self.slot}'. Received: removed={removed}"
            )
        order = np.argsort(self.norms, kind="stable")
        return tuple(sorted(int(i) for i in order[removed:]))


def kept_count(size, fraction):
    """Channels a group of `size` keeps at `fraction` (at least one).

    Args:
        size: channels of the group.
        fraction: share to remove, in `[0, 1]` (a float or a
            `fractions.Fraction`; the floor is exact for fractions).

    Returns:
        `size - min(size - 1, floor(fraction * size))`.
    """
    if not 0 <= fraction <= 1:
        raise L1PruneError(
            f"fraction must be in [0, 1]. Received: fraction={fraction}"
        )
    removed = math.floor(fractions.Fraction(fraction) * size)
    return size - min(size - 1, removed)


# === Groups and norms ===


def _filter_norms(layer, kind):
    kernel = np.abs(np.asarray(layer.kernel, dtype=np.float64))
    if kind == "depthwise":
        # (kh, kw, C, multiplier 1): one filter per input channel.
        return kernel.sum(axis=(0, 1, 3))
    return kernel.sum(axis=(0, 1, 2))


def _channel_changing_readers(graph):
    """Groups read by a weightless layer whose output is another group."""
    readers = {}
    for name, (g_in, g_out) in graph.layer_groups.items():
        if name in graph.nodes or g_in is None or g_in == g_out:
            continue
        readers.setdefault(g_in, name)
    return readers


def _slots(model, model_name, preset, shortcut):
    return models.layer_slots(
        model_name,
        preset=preset,
        shortcut=shortcut,
        input_shape=tuple(model.input_shape[1:]),
    )


def find_groups(
    model,
    model_name,
    *,
    preset=None,
    shortcut=None,
    prune_streams=True,
):
    """The prunable channel groups of a zoo model, with their L1 norms.

    Args:
        model: a functional zoo network built by
            `tfgraft.models.build_model(model_name, ...)` (any widths).
        model_name: its registry name, e.g. `"resnet56"`.
        preset: the preset it was built with (picks the default shortcut).
        shortcut: its shortcut type (`"A"`, `"projection"` or None).
        prune_streams: also return residual-stream groups.

    Returns:
        A tuple of `FilterGroup`s in slot order.

    Raises:
        L1PruneError: `model` is not a `model_name` network.
    """
    graph = graph_lib.analyze(model)
    slots = _slots(model, model_name, preset, shortcut)
    slot_convs = {}
    for node in graph.convs():
        if node.name not in slots:
            raise L1PruneError(
                f"model '{model.name}' is not a '{model_name}' network of "
                f"the zoo: conv '{node.name}' has no width slot. Received: "
                f"model_name={model_name!r}, shortcut={shortcut!r}"
            )
        slot_convs.setdefault(slots[node.name], set()).add(node.name)
    blocked = _channel_changing_readers(graph)
    order = list(models.default_channel_config(model_name).widths)
    groups = []
    for g in graph.groups.values():
        if not g.prunable or not g.producers or g.id in blocked:
            continue
        if g.residual and not prune_streams:
            continue
        group_slots = {slots.get(p) for p in g.producers}
        if len(group_slots) != 1 or None in group_slots:
            continue
        slot = group_slots.pop()
        # A slot shared with another group would need the same widths
        # there too; the zoo has none, so such a group is left alone.
        if slot_convs[slot] != set(g.producers):
            continue
        norms = np.zeros(g.size, np.float64)
        for p in g.producers:
            norms += _filter_norms(model.get_layer(p), graph.nodes[p].kind)
        groups.append(
            FilterGroup(
                slot=slot,
                group=g.id,
                kind=STREAM if g.residual else INTERNAL,
                size=int(g.size),
                producers=tuple(g.producers),
                norms=norms,
            )
        )
    groups.sort(key=lambda x: order.index(x.slot))
    return tuple(groups)


def channel_config_of(model, model_name, *, preset=None, shortcut=None):
    """The `ChannelConfig` (widths per slot) `model` was built from."""
    widths = {}
    slots = _slots(model, model_name, preset, shortcut)
    for layer_name, slot in slots.items():
        layer = model.get_layer(layer_name)
        if isinstance(layer, keras.layers.Conv2D) and not isinstance(
            layer, keras.layers.DepthwiseConv2D
        ):
            widths.setdefault(slot, int(layer.filters))
    order = models.default_channel_config(model_name).widths
    missing = [s for s in order if s not in widths]
    if missing:
        raise L1PruneError(
            f"model '{model.name}': no conv gives the width of slot "
            f"'{missing[0]}'. Received: model_name={model_name!r}"
        )
    return models.ChannelConfig(model_name, {s: widths[s] for s in order})


# === The fraction search ===


@dataclasses.dataclass(frozen=True)
class PrunePlan:
    """Which channels an L1 pruning keeps, and what that costs.

    Attributes:
        model_name: registry name.
        preset: resolved preset.
        shortcut: resolved shortcut type (None without shortcuts).
        convention: `tfgraft.complexity` convention of the FLOPs.
        fraction: the shared pruning fraction (a `fractions.Fraction`):
            every group lost `floor(fraction * size)` channels (at most
            `size - 1`), or one fewer where its turn at `fraction` had
            not come (module docstring).
        groups: the prunable `FilterGroup`s.
        kept: `{slot: indices of kept channels}` for every group.
        original_config: the widths before pruning.
        channel_config: the widths after pruning (records the topology).
        flops_before: FLOPs of the unpruned model.
        flops_after: FLOPs of the pruned model.
        target_flops_cut: the requested cut, or None (fraction given).
        target_tolerance: allowed `|cut - target_flops_cut|`.
        evaluations: FLOPs counts the search made.
    """

    model_name: str
    preset: str
    shortcut: str | None
    convention: str
    fraction: fractions.Fraction
    groups: tuple
    kept: dict
    original_config: models.ChannelConfig
    channel_config: models.ChannelConfig
    flops_before: int
    flops_after: int
    target_flops_cut: float | None
    target_tolerance: float
    evaluations: int

    @property
    def flops_cut(self):
        """`1 - flops_after / flops_before`."""
        return 1.0 - self.flops_after / self.flops_before

    def kept_by_group(self):
        """`{graph group id: kept indices}` for `copy_kept_weights`."""
        return {g.group: self.kept[g.slot] for g in self.groups}

    def as_dict(self):
        """JSON-ready summary (kept indices included, norms not)."""
        return {
            "model": self.model_name,
            "preset": self.preset,
            "shortcut": self.shortcut,
            "convention": self.convention,
            "fraction": float(self.fraction),
            "fraction_exact": str(self.fraction),
            "target_flops_cut": self.target_flops_cut,
            "target_tolerance": self.target_tolerance,
            "flops_before": self.flops_before,
            "flops_after": self.flops_after,
            "flops_cut": self.flops_cut,
            "evaluations": self.evaluations,
            "groups": [
                {
                    "slot": g.slot,
                    "kind": g.kind,
                    "size": g.size,
                    "kept": len(self.kept[g.slot]),
                    "producers": list(g.producers),
                }
                for g in self.groups
            ],
            "kept": {slot: list(idx) for slot, idx in self.kept.items()},
        }


class _FlopsAt:
    """FLOPs of `model` with each group reduced by a number of channels."""

    def __init__(self, model, groups, convention):
        self.model = model
        self.groups = groups
        self.convention = convention
        self.cache = {}
        self.full = self((0,) * len(groups))

    def __call__(self, removed):
        removed = tuple(removed)
        if removed not in self.cache:
            active = {
                p: (None, g.size - n)
                for g, n in zip(self.groups, removed)
                for p in g.producers
            }
            self.cache[removed] = int(
                complexity.count(
                    self.model, self.convention, active_channels=active
                ).flops
            )
        return self.cache[removed]

    def cut(self, removed):
        return 1.0 - self(removed) / self.full


def _removals(groups):
    """Every single-channel removal: `(due fraction, group index)`, sorted.

    The k-th channel (k = 1 .. C - 1) of a group of C channels is due at
    fraction k / C; removals due together go in group (slot) order.
    """
    events = [
        (fractions.Fraction(k, g.size), i)
        for i, g in enumerate(groups)
        for k in range(1, g.size)
    ]
    return sorted(events)


def _removed_after(events, steps, num_groups):
    removed = [0] * num_groups
    for _, i in events[:steps]:
        removed[i] += 1
    return tuple(removed)


def _search(flops, groups, target, tolerance):
    """Bisects the number of removals; returns (steps, events)."""
    events = _removals(groups)

    def cut(steps):
        return flops.cut(_removed_after(events, steps, len(groups)))

    lo, hi = 0, len(events)
    if cut(hi) < target:
        lo = hi  # even one channel per group does not reach the target
    else:
        # Invariant: cut(lo) < target <= cut(hi).
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if cut(mid) >= target:
                hi = mid
            else:
                lo = mid
    below, above = cut(lo), cut(hi)
    best = hi if abs(above - target) <= abs(below - target) else lo
    achieved = cut(best)
    if abs(achieved - target) > tolerance:
        if lo == hi:
            why = (
                f"at most {achieved:.4f} is reachable (every prunable "
                "group down to one channel)"
            )
        else:
            why = (
                f"the nearest reachable cuts are {below:.4f} and "
                f"{above:.4f} (one channel of one group apart); raise "
                "target_tolerance"
            )
        raise L1PruneError(
            f"target_flops_cut={target}: {why}. Received: "
            f"target_tolerance={tolerance}"
        )
    return best, events


def plan_pruning(
    model,
    model_name,
    *,
    target_flops_cut=None,
    fraction=None,
    target_tolerance=0.02,
    prune_streams=True,
    preset=None,
    shortcut=None,
    convention="pff",
):
    """Chooses the channels an L1 pruning of `model` keeps.

    Give exactly one of `target_flops_cut` (the fraction is searched, see
    the module docstring) and `fraction` (used as is).

    Args:
        model: a trained functional zoo network (see `find_groups`).
        model_name: its registry name.
        target_flops_cut: wanted `1 - FLOPs_after / FLOPs_before`, in
            `(0, 1)`.
        fraction: share of every prunable group to remove, in `[0, 1]`.
        target_tolerance: allowed `|achieved cut - target_flops_cut|`.
        prune_streams: also prune residual-stream groups.
        preset: the preset `model` was built with.
        shortcut: its shortcut type.
        convention: `tfgraft.complexity` convention of the FLOPs.

    Returns:
        A `PrunePlan`.

    Raises:
        L1PruneError: bad arguments, nothing prunable, or a target that
            one shared fraction cannot meet within `target_tolerance`.

    Example:

    >>> net = models.build_model("resnet20", preset="pff", width_mult=0.25)
    >>> plan = plan_pruning(net, "resnet20", preset="pff", fraction=0.5)
    >>> plan.channel_config.widths["stage3"], round(plan.flops_cut, 2)
    (8, 0.74)
    """
    if (target_flops_cut is None) == (fraction is None):
        raise L1PruneError(
            "give exactly one of target_flops_cut and fraction. Received: "
            f"target_flops_cut={target_flops_cut}, fraction={fraction}"
        )
    if target_flops_cut is not None and not 0 < target_flops_cut < 1:
        raise L1PruneError(
            "target_flops_cut must be in (0, 1). Received: "
            f"target_flops_cut={target_flops_cut}"
        )
    if not 0 <= target_tolerance < 1:
        raise L1PruneError(
            "target_tolerance must be in [0, 1). Received: "
            f"target_tolerance={target_tolerance}"
        )
    if convention not in complexity.CONVENTIONS:
        raise L1PruneError(
            f"convention must be one of {', '.join(complexity.CONVENTIONS)}. "
            f"Received: convention={convention!r}"
        )
    preset, shortcut = models.resolve_topology(model_name, preset, shortcut)
    groups = find_groups(
        model,
        model_name,
        preset=preset,
        shortcut=shortcut,
        prune_streams=prune_streams,
    )
    if not groups:
        raise L1PruneError(
            f"model '{model.name}' has no prunable channel group. Received: "
            f"prune_streams={prune_streams}, shortcut={shortcut!r}"
        )
    flops = _FlopsAt(model, groups, convention)
    if fraction is None:
        steps, events = _search(
            flops, groups, target_flops_cut, target_tolerance
        )
        removed = _removed_after(events, steps, len(groups))
        chosen = events[steps - 1][0] if steps else fractions.Fraction(0)
    else:
        chosen = fractions.Fraction(fraction)
        removed = tuple(g.size - kept_count(g.size, chosen) for g in groups)
    kept = {g.slot: g.kept(n) for g, n in zip(groups, removed)}
    original = channel_config_of(
        model, model_name, preset=preset, shortcut=shortcut
    )
    widths = {**original.widths, **{s: len(i) for s, i in kept.items()}}
    pruned = models.ChannelConfig(model_name, widths).with_topology(
        preset, shortcut
    )
    return PrunePlan(
        model_name=model_name,
        preset=preset,
        shortcut=shortcut,
        convention=convention,
        fraction=chosen,
        groups=groups,
        kept=kept,
        original_config=original.with_topology(preset, shortcut),
        channel_config=pruned,
        flops_before=flops.full,
        flops_after=flops(removed),
        target_flops_cut=target_flops_cut,
        target_tolerance=target_tolerance,
        evaluations=len(flops.cache),
    )


# === The pruned network ===


def copy_kept_weights(source, target, kept_by_group):
    """Copies the kept slices of every weight of `source` into `target`.

    Args:
        source: the unpruned functional model.
        target: a model with the same layer names whose widths are the
            kept counts (e.g. built from `PrunePlan.channel_config`).
        kept_by_group: `{group id of graph.analyze(source): kept channel
            indices}`; groups not named keep every channel.

    Raises:
        L1PruneError: a layer is missing or a slice does not fit.
    """
    graph = graph_lib.analyze(source)
    target_names = {layer.name for layer in target.layers if layer.weights}
    if set(graph.weighted) != target_names:
        extra = sorted(set(graph.weighted) ^ target_names)
        raise L1PruneError(
            f"models '{source.name}' and '{target.name}' differ in their "
            f"weighted layers: {extra[:3]}"
        )
    for name in graph.weighted:
        values = surgery.sliced_weights(
            source.get_layer(name), graph, kept_by_group.get
        )
        variables = models.surgery_weights(target.get_layer(name))
        surgery.assign(name, variables, values, L1PruneError)


def build_pruned(model, plan, *, model_name=None):
    """Builds the pruned network of `plan` with `model`'s kept weights.

    Args:
        model: the model `plan` was made for.
        plan: a `PrunePlan` from `plan_pruning(model, ...)`.
        model_name: Keras name of the new model.

    Returns:
        A `keras.Model` of `plan.channel_config`; in inference mode its
        logits equal `model`'s wherever the removed channels output zero.
    """
    graph = graph_lib.analyze(model)
    for g in plan.groups:
        mine = graph.groups.get(g.group)
        if mine is None or tuple(mine.producers) != g.producers:
            raise L1PruneError(
                f"plan was made for another model than '{model.name}' "
                f"(group of slot '{g.slot}' differs)"
            )
    standardize = model.get_layer("standardize")
    pruned = models.build_model(
        plan.model_name,
        num_classes=int(model.output_shape[-1]),
        input_shape=tuple(model.input_shape[1:]),
        mean=standardize.mean,
        std=standardize.std,
        channel_config=plan.channel_config,
        preset=plan.preset,
        shortcut=plan.shortcut,
        model_name=model_name,
    )
    copy_kept_weights(model, pruned, plan.kept_by_group())
    return pruned
