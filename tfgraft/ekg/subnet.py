"""EKG on your own model: `search_subnet(model, train_data, val_data)`.

The EKG job (`tfgraft.ekg.job.EKG`) runs phases 2-4 of METHODS §3 on a
zoo network it builds by name by calling `search_subnet`, which takes any
functional Keras CNN: the warm-up pass (on a copy), one `ChannelGate` per
prunable channel group (`GatedNetwork`), the greedy search, the memory
bank and the compact network (`tfgraft.surgery.rebuild` of the model's own
graph with the sliced, norm-rescaled weights, so its logits equal the
gated network's masked logits in training and inference mode). Which
channels can be gated, and fine-tuning with the bank
(`tfgraft.ekg.fit.KnowledgeModel`): README.md, "EKG and LW-DNA on your own
model".
"""

import dataclasses
import time

import numpy as np

from tfgraft import complexity
from tfgraft import graph as graph_lib
from tfgraft import surgery
from tfgraft.data import model_arrays
from tfgraft.ekg import errors
from tfgraft.ekg import extract as extract_lib
from tfgraft.ekg import gated as gated_lib
from tfgraft.ekg import memory_bank as bank_lib
from tfgraft.ekg import search as search_lib

CONVENTIONS = ("ekg", "macs")


@dataclasses.dataclass
class SubnetResult:
    """What `search_subnet` returns.

    Attributes:
        model: the compact searched network (a new functional model with
            the source's layer names; weights inherited: sliced and
            norm-rescaled from the pretrained ones).
        widths: `{gate name: kept channels}`, one entry per channel group
            the search could prune (`gated.info` names what each covers).
        filters: `{Conv2D layer name: filters}` of every conv whose width
            changed; `tfgraft.surgery.rebuild(model, filters=filters)`
            rebuilds the compact architecture from the original model.
        channel_config: the searched `tfgraft.models.ChannelConfig` when
            `search_subnet` was given the zoo model's `channel_config` (and
            `slots`), else None.
        flops: `{"ekg" | "macs": {"before": int, "after": int}}`
            (`tfgraft.complexity.count` conventions).
        params: the same for parameters.
        flops_rate: EKG-convention FLOPs after / before; at most
            `target_flops_rate` (the search stops at the first step that
            reaches it).
        search: the `tfgraft.ekg.search.SearchResult` (history, final
            sub-network, pseudo-supernet logits).
        gated: the `GatedNetwork`, left in the final sub-network's state
            (its `model` computes the masked logits `model` equals).
        bank: the `SubnetMemoryBank`: one snapshot per history entry and,
            when `train_data` was given, the teachers' logits for every
            training image (`bank.knowledge`, `[N, classes, T]`).
        teachers: indices of the teachers in `search.history`.
        warmup_loss: mean loss of the warm-up pass (None without it).
        seconds: `{"search": warm-up + search, "bank": teacher logits}`.
    """

    model: object
    widths: dict
    filters: dict
    channel_config: object
    flops: dict
    params: dict
    flops_rate: float
    search: search_lib.SearchResult
    gated: gated_lib.GatedNetwork
    bank: bank_lib.SubnetMemoryBank
    teachers: list
    warmup_loss: float | None
    seconds: dict

    @property
    def knowledge(self):
        """Host `[N, classes, T]` teacher logits, or None."""
        if self.bank.knowledge is None:
            return None
        return self.bank.knowledge.numpy()


def _fail(message):
    raise errors.EKGError(message)


def _check_data(arg, data, model, required=True):
    if data is None:
        if required:
            _fail(f"{arg} must be (images, labels). Received: {arg}=None")
        return None
    return model_arrays.check_labeled_images(
        arg, data, model, errors.EKGError
    )


def _check_args(target_flops_rate, search_step, cost_mode, batch, teachers):
    for name, value in (
        ("target_flops_rate", target_flops_rate),
        ("search_step", search_step),
        ("cost_mode", cost_mode),
    ):
        why = search_lib.knob_requirement(name, value)
        if why:
            _fail(f"{name} {why}. Received: {name}={value!r}")
    for name, value in (("batch_size", batch), ("num_teachers", teachers)):
        if int(value) != value or value < 1:
            _fail(f"{name} must be an int >= 1. Received: {value}")


def search_subnet(
    model,
    train_data,
    val_data,
    *,
    target_flops_rate=0.45,
    search_knowledge=True,
    search_step=0.2,
    cost_mode="as_coded",
    batch_size=256,
    warmup=True,
    warmup_data=None,
    num_teachers=5,
    slots=None,
    channel_config=None,
    log=None,
    name=None,
):
    """Searches an EKG sub-network of a pretrained functional model.

    Args:
        model: a trained functional (or built `Sequential`) Keras model,
            channels last, raw images in, logits out. Not modified.
        train_data: `(images, labels)`, the fine-tuning set: the bank
            caches the teachers' logits for these images, in this order
            (un-augmented, training-mode BN, batches of `batch_size`), and
            the warm-up pass runs on it unless `warmup_data` is given.
            None: no teacher logits (`bank.knowledge` is None).
        val_data: `(images, labels)`, the fixed search set that scores the
            channels and the candidates (EKG: 32 images per class).
        target_flops_rate: stop at the first step whose EKG-convention
            FLOPs are at most this fraction of the model's, in (0, 1).
        search_knowledge: score with validation CE plus soft CE to the
            ensemble of the accepted sub-networks (the paper); False: CE
            only.
        search_step: coarse width step (divided by a gate's number of
            producing convs).
        cost_mode: `"as_coded"` (the reference's pre-filter) or
            `"intended"`; see `tfgraft.ekg.search.SearchConfig`.
        batch_size: batch of the search, the warm-up and the teacher
            logits (the reference: 256).
        warmup: run the warm-up pass first (on a copy of `model`).
        warmup_data: `(images, labels)` of the warm-up pass (the job: the
            first 256 training images per class); default `train_data`.
        num_teachers: teachers picked from the search history.
        slots: optional `{layer name: width slot}` of a zoo model
            (`tfgraft.models.layer_slots`), naming each gate by its slot.
        channel_config: optional zoo `ChannelConfig` `model` was built from
            (needs `slots`); the result then has the searched config.
        log: optional `f(entry)` after every accepted search step (e.g.
            `tfgraft.ekg.search.log_entry`).
        name: name of the compact model (default `<model name>_ekg`).

    Returns:
        A `SubnetResult`.

    Raises:
        EKGError: a bad argument (the message names it), a model EKG cannot
            gate (names the layer), or an unreachable target.
        tfgraft.graph.GraphError: `model` is not a functional model.
    """
    _check_args(
        target_flops_rate, search_step, cost_mode, batch_size, num_teachers
    )
    graph_lib.functional_of(model)  # one-line GraphError otherwise
    if channel_config is not None and slots is None:
        _fail("channel_config needs slots (tfgraft.models.layer_slots(...))")
    val_images, val_labels = _check_data("val_data", val_data, model)
    train = _check_data("train_data", train_data, model, required=False)
    if warmup_data is not None:
        warm = _check_data("warmup_data", warmup_data, model)
    else:
        warm = train
    if warmup and warm is None:
        _fail(
            "warmup=True needs train_data or warmup_data (or pass "
            "warmup=False)"
        )

    t0 = time.perf_counter()
    warmup_loss = None
    plain = model
    if warmup:
        plain = surgery.clone(model)
        warmup_loss = search_lib.warmup_pass(
            plain, warm[0], warm[1], batch_size=batch_size
        )
    gated = gated_lib.GatedNetwork(plain, slots=slots)
    if gated.num_gates == 0:
        _fail(
            f"model '{model.name}' has no channel group EKG can prune: "
            "gates go after activation layers (ReLU, Activation) reading "
            "a conv's channels; a fused Conv2D(activation=...) has none"
        )
    result = search_lib.search(
        gated,
        val_images.astype(np.float32),
        val_labels,
        search_lib.SearchConfig(
            target_flops_rate=target_flops_rate,
            search_step=search_step,
            cost_mode=cost_mode,
            batch_size=batch_size,
            ensemble_knowledge=search_knowledge,
        ),
        log=log,
    )
    search_seconds = time.perf_counter() - t0

    # === Memory bank and teachers ===
    t1 = time.perf_counter()
    history = result.history
    teachers = bank_lib.select_teachers(
        [h.val_loss for h in history], num_teachers
    )
    knowledge_shape = None
    if train is not None:
        classes = int(gated.model.outputs[0].shape[-1])
        knowledge_shape = (len(train[1]), classes, len(teachers))
    bank = bank_lib.SubnetMemoryBank(
        len(history),
        sum(info.channels for info in gated.info),
        gated.num_gates,
        knowledge_shape=knowledge_shape,
    )
    for h in history:
        bank.push(np.concatenate(h.orders), h.rates, h.val_loss)
    if train is not None:
        snapshots = [(history[t].orders, history[t].rates) for t in teachers]
        knowledge = bank_lib.compute_knowledge(
            gated, snapshots, train[0], batch_size
        )
        bank.set_knowledge(knowledge, teachers)
    bank_seconds = time.perf_counter() - t1

    # === Extraction ===
    gated.set_state(result.final.orders, result.final.rates)
    kept = gated.kept()
    filters = {}
    for info, k in zip(gated.info, kept):
        for producer in info.producers:
            if k != info.channels:
                filters[producer] = int(k)
    compact = surgery.rebuild(
        plain, filters=filters, name=name or f"{model.name}_ekg"
    )
    extract_lib.copy_compact_weights(gated, compact)
    searched = None
    if channel_config is not None:
        searched = gated.channel_config(channel_config)
    flops, params = {}, {}
    for convention in CONVENTIONS:
        before = complexity.count(model, convention)
        after = complexity.count(compact, convention)
        flops[convention] = {"before": before.flops, "after": after.flops}
        params[convention] = {"before": before.params, "after": after.params}
    return SubnetResult(
        model=compact,
        widths={info.name: int(k) for info, k in zip(gated.info, kept)},
        filters=filters,
        channel_config=searched,
        flops=flops,
        params=params,
        flops_rate=flops["ekg"]["after"] / flops["ekg"]["before"],
        search=result,
        gated=gated,
        bank=bank,
        teachers=teachers,
        warmup_loss=warmup_loss,
        seconds={"search": search_seconds, "bank": bank_seconds},
    )
