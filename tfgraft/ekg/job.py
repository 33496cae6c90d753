"""The EKG job: pretrained net -> search -> memory bank -> extract -> fine-tune.

Phases, each leaving its results in the workdir so a rerun resumes:

1. **Pretrained net.** `--pretrained`, or a pretraining run
   (`tfgraft.pretrained.locate_or_pretrain`).
2. **Search** (METHODS §3.3) on the fixed `train_sub`/`val` sets: the
   warm-up pass, then the greedy pseudo-supernet search down to
   `--target_flops_rate` (EKG FLOPs convention), scored with the ensemble
   term or, with `--search_knowledge=false`, with the validation CE only.
   Given the pretrained net, the data and the search flags the search is
   deterministic up to floating-point reproducibility of the device (on
   GPUs add `--deterministic`); `--knowledge` and `--seed` (for a real
   dataset) do not change it.
3. **Memory bank** (§3.4): the search history as snapshots, the teachers
   spread over its validation losses, and their logits for every training
   image (`[N, classes, T]`).
4. **Extraction**: the compact network of the final sub-network (sliced,
   norm-rescaled weights). Phases 2-4 are saved in `<workdir>/search/`
   (`result.json`, `channel_config.json`, a checkpoint of the compact
   net's initial weights and the bank) and `<workdir>/ekg_search.png`.
5. **Fine-tuning** of the compact net with the knowledge curriculum
   (`KnowledgeTrainer`, two views, T = `--kd_temperature`) or plain CE
   (`--knowledge=false`), under the job's strategy / XLA / accumulation
   options, through `tfgraft.training.loop.fit` (checkpoints, resume,
   history). The bank is part of the run's checkpoint.

`report.json` adds an `ekg` section: FLOPs and params before/after (EKG
convention and plain MACs), the accepted steps, the teachers, the switches
(`knowledge`, `search_knowledge`), the seconds of each phase and the
accuracy (inference-mode BN) of the pretrained net, of the searched
sub-network before fine-tuning and after (final and best epoch).
`export/` is the compact net.

Differences from the reference are listed in `tfgraft/ekg/__init__.py`.
"""

import dataclasses
import os

import numpy as np
from absl import logging

from tfgraft import errors as errors_lib
from tfgraft import experiment
from tfgraft import models
from tfgraft import plotting
from tfgraft import pretrained as pretrained_lib
from tfgraft.ekg import data as ekg_data
from tfgraft.ekg import errors
from tfgraft.ekg import extract as extract_lib
from tfgraft.ekg import memory_bank as bank_lib
from tfgraft.ekg import search as search_lib
from tfgraft.ekg import subnet as subnet_lib
from tfgraft.ekg import trainer as ekg_trainer
from tfgraft.training import evaluation
from tfgraft.training import loop
from tfgraft.training import workdir as workdir_lib


class BankHook(loop.Hook):
    """Puts the memory bank into the run's checkpoint."""

    def __init__(self, bank):
        self.bank = bank

    def checkpoint_items(self):
        return {"memory_bank": self.bank}


class FineTune(pretrained_lib.FineTune):
    """Phase 5: fine-tunes the compact net (the run's `ekg` report).

    Args:
        config, channel_config, start, result: as `pretrained.FineTune`'s
            (`start` the extracted net, `result` `search/result.json`).
        bank: the `SubnetMemoryBank` (teacher logits).
    """

    name = "ekg"

    def __init__(self, *args, bank=None):
        super().__init__(*args)
        self.bank = bank

    def saved_config(self, workdir):
        return searched_config(workdir, self.config.model)

    def make_trainer(self, nets, optimizers, strategy, **options):
        e = self.config.ekg
        if e.knowledge:
            return ekg_trainer.KnowledgeTrainer(
                nets,
                optimizers,
                strategy,
                temperature=e.temperature,
                **options,
            )
        return super().make_trainer(nets, optimizers, strategy, **options)

    def train_dataset(self, ex, index, start_step):
        e = self.config.ekg
        return ekg_data.train_dataset(
            ex.source,
            batch_size=self.config.data.batch_size,
            seed=experiment.data_seed(self.config.run.seed, index),
            start_step=start_step,
            views=2 if e.knowledge else 1,
            jitter=e.knowledge,
            knowledge=self.bank.knowledge.numpy() if e.knowledge else None,
        )

    def hooks(self, ex, trainer):
        return [BankHook(self.bank)]

    def report_extras(self, ex, trainer, history):
        r, e = self.result, self.config.ekg
        finetuned = experiment.accuracy_summary(history, 0)
        accuracy = dict(r["accuracy"])
        accuracy["finetuned_final"] = finetuned["final_top1"]
        accuracy["finetuned_best"] = finetuned["best_top1"]
        steps = r["history"][1:] + [r["final"]]
        return {
            "ekg": {
                "pretrained": r["settings"]["pretrained"],
                "pretrained_checkpoint": r["pretrained_checkpoint"],
                "target_flops_rate": e.target_flops_rate,
                "cost_mode": e.cost_mode,
                "search_knowledge": e.search_knowledge,
                "knowledge": e.knowledge,
                "temperature": e.temperature,
                "flops": r["flops"],
                "params": r["params"],
                "flops_rate": r["flops_rate"],
                "accuracy": accuracy,
                "teachers": r["teachers"],
                "teacher_losses": r["teacher_losses"],
                "ensemble_size": r["ensemble_size"],
                "steps": len(r["history"]),
                # Accepted steps whose choice was not the lowest-CE
                # candidate (the ensemble term changed it; 0 without it).
                "steps_not_lowest_loss": sum(
                    s["gate"] != s["lowest_loss_gate"] for s in steps
                ),
                "history": r["history"] + [r["final"]],
                "channel_config": r["channel_config"],
                "original_widths": r["original_widths"],
                "search_seconds": r["search_seconds"],
                "bank_seconds": r["bank_seconds"],
                "teacher_images_per_sec": r.get("teacher_images_per_sec"),
                # Training steps of the fine-tuning, all sessions (no eval).
                "finetune_seconds": sum(h["seconds"] for h in history),
            },
        }


class EKG(pretrained_lib.PruningJob):
    """Searches, distils and fine-tunes an EKG sub-network (one net).

    The job (`train.flags.JOBS`): `run` is the pipeline of phases 1-5.
    After `search`, `search_result`, `compact` (the extracted net), `bank`
    and `knowledge` hold phases 2-4; after `run`, `experiment` is the
    run's `Experiment`.

    Args:
        config: a `JobConfig` with `ekg` set; `model.preset` defaults to
            `"ekg"`.
    """

    name = "ekg"
    phase_dir = "search"
    error = errors.EKGError
    fine_tune = FineTune
    section = "ekg"
    phase_fields = (
        "target_flops_rate",
        "search_step",
        "cost_mode",
        "batch_size",
        "train_per_class",
        "val_per_class",
        "search_seed",
        "warmup",
        "search_knowledge",
        "num_teachers",
    )

    def __init__(self, config):
        super().__init__(
            experiment.job_config(
                config, "EKG", "ekg", "an EKGConfig", preset="ekg"
            )
        )
        self.compact = None
        self.pruned_config = None

    def phases(self, ex):
        finetune = self.search(ex)  # phases 1-4
        return ex.train(finetune)  # 5. fine-tuning

    def search(self, ex):
        """Phases 1-4 in the opened experiment `ex`; returns phase 5's
        `FineTune` method."""
        with errors_lib.flag_names(source="dataset"):
            ekg_data._arrays(ex.source)  # EKG needs an in-memory source
        # 1. The pretrained net (a baseline run of its own if needed).
        pretrained = pretrained_lib.locate_or_pretrain(ex, self.options)
        # 2-4. Search, memory bank, extraction, or their saved result.
        found = self._load_search(ex, pretrained)
        self.search_result = found or self._search(ex, pretrained)
        self.knowledge = self.bank.knowledge.numpy()
        return FineTune(
            self.config,
            self.pruned_config,
            self.compact,
            self.search_result,
            bank=self.bank,
        )

    # === Phases 2-4: search, bank, extraction ===

    def _load_search(self, ex, pretrained):
        result = self.saved_result(ex, pretrained)
        if result is None:
            return None
        search_dir = os.path.join(ex.workdir, "search")
        logging.info("Restoring the search result from %s…", search_dir)
        self.pruned_config = searched_config(ex.workdir, self.config.model)
        self.compact = experiment.plain_net(
            self.config, ex.info, self.pruned_config, "compact"
        )
        self.bank = bank_lib.SubnetMemoryBank(**result["bank"])
        self.restore_phase(ex, memory_bank=self.bank, compact=self.compact)
        return result

    def _search(self, ex, pretrained):
        e = self.config.ekg
        full_config = models.model_channel_config(self.config.model)
        plain, read = self.load_pretrained(ex, pretrained, full_config)
        test_ds = ex.test_dataset()
        pretrained_acc = evaluation.evaluate_model(plain, test_ds)
        logging.info("Pretrained net: top1 %.4f", pretrained_acc["top1"])

        sets = ekg_data.search_split(
            ex.source,
            train_per_class=e.train_per_class,
            val_per_class=e.val_per_class,
            seed=e.search_seed,
        )
        slots = models.layer_slots(
            self.config.model.name,
            preset=self.config.model.preset,
            shortcut=self.config.model.shortcut,
            input_shape=ex.info.image_shape,
        )
        logging.info(
            "Search (warm-up: %s) down to FLOPs rate %.3f on %d val images "
            "(objective: %s)…",
            e.warmup,
            e.target_flops_rate,
            len(sets.val_labels),
            "CE + soft CE to the ensemble" if e.search_knowledge else "CE",
        )
        # Phases 2-4 are the public API's (`plain` is not changed).
        with errors_lib.flag_names(batch_size="ekg_batch_size"):
            found = subnet_lib.search_subnet(
                plain,
                ex.source.arrays("train"),
                (sets.val_images, sets.val_labels),
                target_flops_rate=e.target_flops_rate,
                search_knowledge=e.search_knowledge,
                search_step=e.search_step,
                cost_mode=e.cost_mode,
                batch_size=e.batch_size,
                warmup=e.warmup,
                warmup_data=(sets.train_images, sets.train_labels),
                num_teachers=e.num_teachers,
                slots=slots,
                channel_config=full_config,
                log=search_lib.log_entry,
            )
        gated, result, teachers = found.gated, found.search, found.teachers
        history = result.history
        self.bank = found.bank
        knowledge = found.knowledge
        logging.info(
            "Teachers %s; teacher logits for %d images",
            teachers,
            len(knowledge),
        )

        # === Extraction: the zoo's compact net (the job's checkpoints and
        # exports rebuild it from its channel config) ===
        self.compact, self.pruned_config = extract_lib.extract(
            gated,
            full_config,
            model_name="compact",
            **experiment.model_kwargs(self.config.model, ex.info),
        )
        searched_acc = evaluation.evaluate_model(self.compact, test_ds)
        logging.info(
            "Searched sub-network: top1 %.4f before fine-tuning",
            searched_acc["top1"],
        )
        result_json = {
            "settings": self.settings(ex, pretrained),
            "pretrained_checkpoint": read,
            "channel_config": dict(self.pruned_config.widths),
            "original_widths": dict(full_config.widths),
            "gates": [dataclasses.asdict(i) for i in gated.info],
            "history": [h.to_json() for h in history],
            "final": result.final.to_json(),
            "final_rates": result.final.rates,
            "ensemble_size": result.ensemble_size,
            "teachers": teachers,
            "teacher_losses": [history[t].val_loss for t in teachers],
            "warmup_loss": found.warmup_loss,
            "accuracy": {
                "pretrained": pretrained_acc["top1"],
                "searched": searched_acc["top1"],
            },
            "flops": found.flops,
            "params": found.params,
            "flops_rate": found.flops_rate,
            "search_seconds": found.seconds["search"],
            "bank_seconds": found.seconds["bank"],
            # The teacher-logit pass (forward only, training-mode BN):
            # images x teachers per second, tracing included.
            "teacher_images_per_sec": len(knowledge)
            * len(teachers)
            / max(found.seconds["bank"], 1e-9),
            # The bank's `SubnetMemoryBank` arguments.
            "bank": {
                "capacity": self.bank.capacity,
                "snapshot_size": self.bank.snapshot_size,
                "num_gates": self.bank.num_gates,
                "knowledge_shape": list(knowledge.shape),
            },
        }
        if ex.is_chief:
            _plot_search(
                os.path.join(ex.workdir, "ekg_search.png"), result_json
            )
        self.save_phase(
            ex,
            result_json,
            self.pruned_config,
            os.path.join(ex.workdir, "search", "channel_config.json"),
            memory_bank=self.bank,
            compact=self.compact,
        )
        return result_json


def searched_config(workdir, model):
    """The compact net's `ChannelConfig` from `search/result.json`."""
    path = os.path.join(workdir, "search", "result.json")
    if not os.path.isfile(path):
        raise errors.EKGError(
            f"{path}: missing; the run's search has not finished"
        )
    widths = workdir_lib.read_json(path)["channel_config"]
    # result.json keeps bare widths; record this run's topology.
    return models.ChannelConfig(model.name, widths).with_topology(
        *models.resolve_topology(model.name, model.preset, model.shortcut)
    )


def _plot_search(path, result):
    """FLOPs rate vs val loss along the search; widths before/after."""
    plt = plotting.pyplot(path)
    if plt is None:
        return

    steps = result["history"] + [result["final"]]
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(13, 4.5))
    rates = [s["flops_rate"] for s in steps]
    losses = [s["val_loss"] for s in steps]
    ax0.plot(rates, losses, "o-", ms=3, label="accepted sub-networks")
    teachers = [(rates[i], losses[i]) for i in result["teachers"]]
    ax0.plot(*zip(*teachers), "s", mfc="none", ms=9, label="teachers")
    ax0.plot(rates[-1:], losses[-1:], "r*", ms=12, label="final")
    ax0.axvline(
        result["settings"]["target_flops_rate"], color="gray", ls="--", lw=1
    )
    ax0.invert_xaxis()
    ax0.set_xlabel("FLOPs rate (EKG counter)")
    ax0.set_ylabel("val loss (sum CE / batch size, training-mode BN)")
    ax0.set_title("Search trajectory")
    ax0.legend(fontsize=8)
    slots = list(result["original_widths"])
    for key, width, color, label in (
        ("original_widths", 0.8, "lightgray", "original"),
        ("channel_config", 0.5, "C0", "searched"),
    ):
        widths = [result[key][s] for s in slots]
        ax1.bar(np.arange(len(slots)), widths, width, color=color, label=label)
    plotting.layer_ticks(ax1, slots)
    ax1.set_ylabel("channels")
    ax1.set_title(f"Widths (FLOPs rate {result['flops_rate']:.3f})")
    ax1.legend(fontsize=8)
    fig.tight_layout()
    plotting.save(fig, path)
