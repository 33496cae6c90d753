"""EKG's greedy sub-network search on a pseudo-supernet (METHODS.md §3.3).

Starting from the pretrained (gated) network, every step

a. re-scores all channels on the validation images (gradients of the
   objective with respect to the gate scores) and re-ranks them;
b. pre-filters the gates by the cost of their next coarse step
   (`window_cost`) with a trimmed Otsu threshold (`otsu_threshold`);
c. tries one coarse width step on each candidate (a finer step when the
   coarse one would overshoot the FLOPs target) and evaluates it;
d. accepts the candidate with the lowest objective: validation CE plus soft
   CE towards the running ensemble of the accepted sub-networks' logits
   (the "pseudo-supernet"), which favours smooth sub-networks;
e. adds the accepted sub-network's logits to the ensemble,

until the FLOPs rate (EKG convention) is at or below the target. The pure
parts (costs, threshold, FLOPs model) are functions with their own tests;
`search` wires them to a `GatedNetwork`.

`SearchConfig(ensemble_knowledge=False)` is the ablation without the
pseudo-supernet: the objective of steps a and d is the validation CE alone.
"""

import dataclasses
import math
import time

import numpy as np
import tensorflow as tf
from absl import logging

from tfgraft import complexity
from tfgraft import config as config_lib
from tfgraft.ekg import errors

# The EKG knobs (`tfgraft.config.EKGConfig`): defaults and checks.
_KNOBS = {f.name: f for f in dataclasses.fields(config_lib.EKGConfig)}
# Cost of a gate that cannot shrink any more (width <= 0).
EXHAUSTED_COST = 1e12


class SearchError(errors.EKGError):
    """The search cannot reach its target; the message names the flag."""


def knob_requirement(name, value):
    """The requirement of EKG knob `name` that `value` breaks, or None."""
    return config_lib.requirement(_KNOBS[name], value)


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Options of `search`; defaults and checks are the EKG knobs'.

    Attributes:
        target_flops_rate, search_step, cost_mode, batch_size: the
            `tfgraft.config.EKGConfig` knobs of those names (`cost_mode`:
            see `window_cost`). `batch_size` divides every validation
            batch's sums, also the smaller last one's (as the reference).
        trim: fraction trimmed at each end before the Otsu split.
        max_steps: stop with an error after this many accepted steps
            (0: no limit).
        ensemble_knowledge: `EKGConfig.search_knowledge`: the objective
            (channel scores in step a and candidate choice in step d) is
            validation CE plus soft CE to the pseudo-supernet ensemble `K`
            (the paper). False: plain CE only (`K` is still tracked and
            the soft term still reported as `val_soft`).
    """

    target_flops_rate: float = _KNOBS["target_flops_rate"].default
    search_step: float = _KNOBS["search_step"].default
    cost_mode: str = _KNOBS["cost_mode"].default
    batch_size: int = _KNOBS["batch_size"].default
    trim: float = 0.2
    max_steps: int = 0
    ensemble_knowledge: bool = _KNOBS["search_knowledge"].default

    def __post_init__(self):
        for name in ("target_flops_rate", "search_step", "cost_mode"):
            value = getattr(self, name)
            why = knob_requirement(name, value)
            if why:
                raise SearchError(f"{{{name}}}: {why}", **{name: value})
        if self.batch_size < 1:
            raise SearchError(
                "{batch_size}: must be >= 1", batch_size=self.batch_size
            )


# === Pure parts ===


def coarse_step(channels, num_calls, search_step=0.2):
    """Coarse width step of a gate: `max(1/C, search_step / num_calls)`."""
    return max(1.0 / channels, search_step / num_calls)


def window_cost(scores, width, step, mode="as_coded"):
    """Pre-filter cost of shrinking a gate by one coarse step.

    The scores are sorted ascending (pruned channels score 0 and come
    first); the next step would remove the channels in the window
    `[round((1 - w) C), round((1 - w + step) C))`.

    Args:
        scores: `[C]` channel scores of the gate.
        width: the gate's current width `w` (its rate).
        step: the gate's coarse step.
        mode: `"intended"`: the sum of the window. `"as_coded"`: the
            reference slices the leading axis of its `[1, 1, 1, C]` score
            tensor instead of the channel axis, so the window holds all
            scores when it starts at 0 and none otherwise.

    Returns:
        The cost; `EXHAUSTED_COST` when `width <= 0`.
    """
    if width <= 0:
        return EXHAUSTED_COST
    scores = np.sort(np.asarray(scores, np.float64).ravel())
    c = scores.size
    lo = round((1.0 - width) * c)
    hi = round((1.0 - width + step) * c)
    if mode == "intended":
        return float(np.sum(scores[lo:hi]))
    if mode == "as_coded":
        return float(np.sum(scores)) if lo <= 0 < hi else 0.0
    raise ValueError(f"Unknown cost mode. Received: mode={mode!r}")


def otsu_threshold(costs, trim=0.2):
    """Trimmed Otsu threshold of the costs, or None for too few of them.

    Sorts the costs, drops `ceil(trim * n)` at each end, and picks the
    split `t` in `[1, n - 2]` that maximises
    `t * (n - t) * (mean(left) - mean(right))**2`; the threshold is the
    midpoint of the two values at the split.

    Returns:
        The threshold, or None when fewer than 3 values remain.
    """
    values = np.sort(np.asarray(costs, np.float64).ravel())
    cut = math.ceil(trim * values.size)
    if cut:
        values = values[cut : values.size - cut]
    n = values.size
    if n < 3:
        return None
    best, best_t = -1.0, 1
    for t in range(1, n - 1):
        left, right = values[:t], values[t:]
        between = t * (n - t) * (left.mean() - right.mean()) ** 2
        if between > best:
            best, best_t = between, t
    return float((values[best_t - 1] + values[best_t]) / 2.0)


class FlopsModel(complexity.ChannelFlops):
    """Exact EKG-convention FLOPs of a gated network as a function of widths.

    `flops(kept)`: the FLOPs with gate `i` keeping `kept[i]` channels
    (`tfgraft.complexity.ChannelFlops`, keyed by gate index).

    Args:
        gated: a `GatedNetwork`.
    """

    def __init__(self, gated):
        graph, gate = gated.graph, gated.group_gate.get
        full = complexity.count(gated.source, "ekg")
        self.full_flops = int(full.flops)
        sizes = {g.id: g.size for g in graph.groups.values()}
        layers = {}
        for name, node in graph.nodes.items():
            # A dense layer's outputs (the logits) are never pruned.
            out = None if node.kind == "dense" else gate(node.out_group)
            layers[name] = (
                gate(node.in_group),
                sizes[node.in_group],
                out,
                sizes[node.out_group],
            )
        for name, (_, group) in graph.layer_groups.items():
            if name not in layers and group is not None:
                layers[name] = (None, 1, gate(group), sizes[group])
        super().__init__(full, layers)

    def rate(self, kept):
        return self.flops(kept) / self.full_flops


def active_channels(gated, kept):
    """`active_channels` for `complexity.count` on `gated.source`."""
    out = {}
    for name, node in gated.graph.nodes.items():
        g = gated.group_gate.get(node.out_group)
        if node.kind != "dense" and g is not None:
            out[name] = (None, kept[g])
    return out


# === Evaluation on the validation set ===


def _batches(images, labels, batch_size):
    """Yields `(float32 images, int32 labels)` batches, the last smaller."""
    for i in range(0, len(labels), batch_size):
        yield (
            tf.constant(images[i : i + batch_size], tf.float32),
            tf.constant(labels[i : i + batch_size], tf.int32),
        )


class Evaluator:
    """Runs the gated network on fixed validation batches (training mode).

    Args:
        gated: a `GatedNetwork`.
        images: float32 `[N, H, W, 3]` validation images (0-255).
        labels: int32 `[N]`.
        batch_size: batch size; every batch's sums are divided by it.
        ensemble_knowledge: whether the objective includes the soft CE to
            the ensemble (else plain CE; see `SearchConfig`).
    """

    def __init__(
        self, gated, images, labels, batch_size, ensemble_knowledge=True
    ):
        self.gated = gated
        self.batch_size = int(batch_size)
        self.ensemble_knowledge = bool(ensemble_knowledge)
        self.num = int(labels.shape[0])
        self._batches = list(_batches(images, labels, self.batch_size))
        # One trace for every batch size (the last batch is smaller).
        signature = [
            tf.TensorSpec([None, *images.shape[1:]], tf.float32),
            tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([None, gated.model.output_shape[-1]], tf.float32),
        ]
        self._forward = tf.function(
            self._forward_impl, input_signature=signature
        )
        self._score = tf.function(self._score_impl, input_signature=signature)

    def _objective(self, images, labels, ensemble):
        logits = tf.cast(self.gated.model(images, training=True), tf.float32)
        ce = tf.reduce_sum(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
        )
        soft = tf.reduce_sum(
            tf.nn.softmax_cross_entropy_with_logits(
                tf.nn.softmax(ensemble), logits
            )
        )
        return logits, ce, soft

    def _forward_impl(self, images, labels, ensemble):
        logits, ce, soft = self._objective(images, labels, ensemble)
        pred = tf.argmax(logits, -1, output_type=tf.int32)
        correct = tf.reduce_sum(tf.cast(tf.equal(pred, labels), tf.float32))
        return logits, ce, soft, correct

    def _score_impl(self, images, labels, ensemble):
        variables = self.gated.score_variables()
        with tf.GradientTape() as tape:
            for v in variables:
                tape.watch(v)
            _, ce, soft = self._objective(images, labels, ensemble)
            if self.ensemble_knowledge:
                objective = (ce + soft) / float(self.batch_size)
            else:
                objective = ce / float(self.batch_size)
        grads = tape.gradient(objective, variables)
        for v, g in zip(variables, grads):
            if g is not None:
                v.assign_add(g)

    def _ensemble_batches(self, ensemble):
        starts = range(0, self.num, self.batch_size)
        for batch, i in zip(self._batches, starts):
            ens = ensemble[i : i + self.batch_size]
            yield batch, tf.constant(ens, tf.float32)

    def evaluate(self, ensemble):
        """Logits, accuracy, mean loss and mean objective on the val set.

        Returns:
            dict with `logits` (`[N, classes]`), `accuracy`, `loss` (mean
            over batches of sum CE / batch_size), `soft` (the same for the
            soft CE to `ensemble`) and `score` (the objective: `loss +
            soft`, or `loss` without ensemble knowledge).
        """
        logits, losses, softs, correct = [], [], [], 0.0
        for (images, labels), ens in self._ensemble_batches(ensemble):
            out, ce, soft, right = self._forward(images, labels, ens)
            logits.append(out.numpy())
            losses.append(float(ce) / self.batch_size)
            softs.append(float(soft) / self.batch_size)
            correct += float(right)
        loss, soft = float(np.mean(losses)), float(np.mean(softs))
        return {
            "logits": np.concatenate(logits, axis=0),
            "accuracy": correct / self.num,
            "loss": loss,
            "soft": soft,
            "score": loss + soft if self.ensemble_knowledge else loss,
        }

    def accumulate_scores(self, ensemble):
        """Resets the gate scores, then adds every val batch's gradients."""
        self.gated.reset_scores()
        for (images, labels), ens in self._ensemble_batches(ensemble):
            self._score(images, labels, ens)
        return [g.score.numpy() for g in self.gated.gates]


# === The search ===


@dataclasses.dataclass
class SearchEntry:
    """One sub-network of the search history (step 0: the full net).

    `val_loss` is the mean validation CE, `val_soft` the soft CE to the
    ensemble `K` the step was scored against, `val_score` the objective
    (their sum, or `val_loss` without ensemble knowledge).
    `lowest_loss_gate` is the candidate with the lowest `val_loss` in that
    step (equal to `gate` unless the soft term changed the choice).
    `orders`, `rates` and `val_logits` are the state needed to rebuild and
    teach with it, `trials` every candidate evaluated in the step (dicts
    with `gate`, `rate`, `loss`, `soft`, `score`, `accuracy`); `to_json()`
    leaves these four out.
    """

    step: int
    gate: str | None
    slot: str | None
    rate: float
    channels: int | None
    flops: int
    flops_rate: float
    val_loss: float
    val_soft: float
    val_score: float
    val_accuracy: float
    candidates: int
    seconds: float
    lowest_loss_gate: str | None = None
    orders: list = dataclasses.field(repr=False, default=None)
    rates: list = dataclasses.field(repr=False, default=None)
    val_logits: np.ndarray = dataclasses.field(repr=False, default=None)
    trials: list = dataclasses.field(repr=False, default=None)

    def to_json(self):
        state = ("orders", "rates", "val_logits", "trials")
        out = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in state
        }
        out["seconds"] = out.pop("seconds")  # last, as logged
        return out


@dataclasses.dataclass
class SearchResult:
    """Output of `search`.

    Attributes:
        history: the full net and every accepted sub-network except the
            final one (the teacher candidates of the memory bank).
        final: the last accepted sub-network (the one to extract).
        ensemble: the pseudo-supernet logits `K` on the val set at the end.
        ensemble_size: number of logit arrays averaged into `ensemble`.
        full_flops: FLOPs of the unpruned net (EKG convention).
    """

    history: list
    final: SearchEntry
    ensemble: np.ndarray
    ensemble_size: int
    full_flops: int

    @property
    def entries(self):
        return self.history + [self.final]


def search(gated, val_images, val_labels, config=SearchConfig(), *, log=None):
    """Greedy EKG width search on a gated network (METHODS §3.3 steps 1-4).

    Args:
        gated: a `GatedNetwork` whose weights are the pretrained ones.
        val_images: float32 `[N, H, W, 3]` fixed validation images.
        val_labels: int32 `[N]`.
        config: a `SearchConfig`.
        log: optional `f(entry)` called after every accepted step.

    Returns:
        A `SearchResult`; `gated` is left in the final sub-network's state.

    Raises:
        SearchError: no candidate lowers FLOPs any more before the target
            is reached, or `config.max_steps` is exceeded.
    """
    flops_model = FlopsModel(gated)
    target = config.target_flops_rate
    evaluator = Evaluator(
        gated,
        val_images,
        val_labels,
        config.batch_size,
        ensemble_knowledge=config.ensemble_knowledge,
    )
    infos = gated.info
    channels = [info.channels for info in infos]
    steps = [
        coarse_step(info.channels, info.num_calls, config.search_step)
        for info in infos
    ]
    rates = [1.0] * gated.num_gates
    gated.set_state(rates=rates)

    t0 = time.perf_counter()
    num_classes = int(gated.model.output_shape[-1])
    zeros = np.zeros((len(val_labels), num_classes), np.float32)
    full = evaluator.evaluate(zeros)
    ensemble = full["logits"].astype(np.float64)
    ensemble_size = 1
    entries = []

    def record(i, result, t0, **fields):
        """Appends the history entry of the current rates (gate `i`)."""
        kept = gated.kept(rates)
        flops = flops_model.flops(kept)
        entry = SearchEntry(
            step=len(entries),
            gate=None if i is None else infos[i].name,
            slot=None if i is None else infos[i].slot,
            rate=1.0 if i is None else rates[i],
            channels=None if i is None else kept[i],
            flops=flops,
            flops_rate=flops / flops_model.full_flops,
            val_loss=result["loss"],
            val_soft=result["soft"],
            val_score=result["score"],
            val_accuracy=result["accuracy"],
            seconds=time.perf_counter() - t0,
            orders=gated.orders(),
            rates=list(rates),
            val_logits=result["logits"],
            **fields,
        )
        entries.append(entry)
        if log:
            log(entry)

    record(None, full, t0, candidates=0)

    def rate_of(trial):
        return flops_model.rate(gated.kept(trial))

    while entries[-1].flops_rate > target:
        if config.max_steps and len(entries) > config.max_steps:
            raise SearchError(
                "{target_flops_rate}: not reached within "
                f"{config.max_steps} steps (FLOPs rate "
                f"{entries[-1].flops_rate:.4f})",
                target_flops_rate=target,
            )
        t0 = time.perf_counter()
        k32 = ensemble.astype(np.float32)
        # a. Re-score and re-rank every channel.
        scores = evaluator.accumulate_scores(k32)
        for g, s in zip(gated.gates, scores):
            g.set_order_from_scores(s)
        gated.sync()
        # b. Pre-filter by the cost of each gate's next coarse step.
        costs = [
            window_cost(s, w, st, config.cost_mode)
            for s, w, st in zip(scores, rates, steps)
        ]
        finite = [c for c in costs if c < EXHAUSTED_COST]
        threshold = otsu_threshold(finite, config.trim)
        candidates = [
            i
            for i, c in enumerate(costs)
            if c < EXHAUSTED_COST
            and rates[i] > 0
            and (threshold is None or c <= threshold)
        ]
        # c. Try one step on each candidate.
        current = gated.kept(rates)
        tried = []
        for i in candidates:
            w = round(rates[i] - steps[i], 5)
            trial = list(rates)
            trial[i] = w
            if rate_of(trial) < target:
                # Fine search: the largest width (1/C steps, at most one
                # coarse step up) that still meets the target.
                base, j = w, 1
                while True:
                    up = round(base + j / channels[i], 5)
                    if up > base + config.search_step + 1e-9:
                        break
                    trial[i] = up
                    if rate_of(trial) > target:
                        break
                    w, j = up, j + 1
                trial[i] = w
            if gated.kept(trial)[i] >= current[i]:
                continue  # would not remove a channel
            gated.set_rate(i, w)
            result = evaluator.evaluate(k32)
            gated.set_rate(i, rates[i])
            tried.append((i, w, result))
        if not tried:
            raise SearchError(
                "{target_flops_rate}: unreachable, no gate can shrink "
                f"further (FLOPs rate {entries[-1].flops_rate:.4f})",
                target_flops_rate=target,
            )
        # d. Accept the lowest objective (ties: the earliest gate).
        i, w, result = min(tried, key=lambda t: (t[2]["score"], t[0]))
        lowest_loss = min(tried, key=lambda t: (t[2]["loss"], t[0]))[0]
        rates[i] = w
        gated.set_rate(i, w)
        # e. The pseudo-supernet: running mean of the accepted logits.
        ensemble = (ensemble * ensemble_size + result["logits"]) / (
            ensemble_size + 1
        )
        ensemble_size += 1
        record(
            i,
            result,
            t0,
            candidates=len(tried),
            lowest_loss_gate=infos[lowest_loss].name,
            trials=[
                {"gate": infos[j].name, "rate": rate}
                | {k: r[k] for k in ("loss", "soft", "score", "accuracy")}
                for j, rate, r in tried
            ],
        )
    final = entries.pop()
    return SearchResult(
        history=entries,
        final=final,
        ensemble=ensemble.astype(np.float32),
        ensemble_size=ensemble_size,
        full_flops=flops_model.full_flops,
    )


def log_entry(entry):
    """One fixed-format log line per search step."""
    logging.info(
        "search | step: %4d | gate: %-28s | channels: %4s | flops_rate: "
        "%.4f | val_loss: %.4f | soft: %.4f | score: %.4f | candidates: %d "
        "| %.1fs",
        entry.step,
        entry.gate or "(full net)",
        entry.channels if entry.channels is not None else "-",
        entry.flops_rate,
        entry.val_loss,
        entry.val_soft,
        entry.val_score,
        entry.candidates,
        entry.seconds,
    )


def warmup_pass(
    model,
    images,
    labels,
    *,
    batch_size=256,
    learning_rate=1e-3,
    weight_decay=5e-4,
):
    """Step 0 of the search: one SGD pass over `train_sub` (no augment).

    Nesterov SGD (momentum 0.9, coupled weight decay) on the plain
    pretrained model in training mode (BN statistics update). The summed
    CE is divided by `batch_size / 2`, as the reference divides by 128 for
    batches of 256.

    Returns:
        The mean loss over the pass.
    """
    from tfgraft.training import optimizers

    opt = optimizers.TorchSGD(
        learning_rate,
        momentum=0.9,
        nesterov=True,
        weight_decay=weight_decay,
        name="ekg_warmup",
    )
    opt.build(model.trainable_variables)
    norm = batch_size / 2.0

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, *images.shape[1:]], tf.float32),
            tf.TensorSpec([None], tf.int32),
        ]
    )
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = tf.cast(model(x, training=True), tf.float32)
            loss = (
                tf.reduce_sum(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits)
                )
                / norm
            )
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    losses = [float(step(*b)) for b in _batches(images, labels, batch_size)]
    return float(np.mean(losses)) if losses else 0.0
