"""The LW-DNA job: widen, search, derive, train (and compare with uniform).

Workdir layout (METHODS.md §4.3):

* `flags.cfg`, `config.json`, `job.json`, `data_info.json` — as every job;
* `channel_config.json` — the derived per-layer widths with the model,
  preset and shortcut they were derived for; any job built with the same
  three accepts it (`python -m train.baseline --model=<m> --preset=dhp
  --channel_config=<workdir>/channel_config.json`) and any other is refused
  (`ChannelConfig.check_topology`);
* `search.json` — search steps and loss, the threshold search, the masks;
* `derived/` — a complete `tfgraft.experiment` workdir training the
  derived net with the unchanged protocol (checkpoints, history, report,
  `export/`);
* `uniform/` — the same for the uniform-width original (`train_uniform`);
* `report.json` — widths per slot, DHP FLOPs/params of original, widened
  and derived nets, the search, both accuracies; `widths.png` — per-layer
  widths, original vs widened vs derived.

The comparison at equal FLOPs (`report["derived"]`, `report["uniform"]`,
`report["equal_flops"]`, within `EQUAL_FLOPS_TOLERANCE`) and the uniform
net's recipe are in README.md's LW-DNA item ("Equal FLOPs, params
shown").

Resuming: when `derived/` already holds a checkpoint, the saved
`channel_config.json` is reused and the search is not run again (the
checkpoint holds the trained weights); otherwise the search reruns, which
is deterministic for a given seed. `search.json` records the SHA-256 of
`channel_config.json` as written, so a hand-edited file is refused by name
instead of failing later on the derived checkpoint's shapes.

`train.export` on an LW-DNA workdir exports the derived net of
`derived/checkpoints` (what the run exports to `derived/export/`).

The widening factor is `config.model.width_mult` (the entry point defaults
it to 2); `config.model.channel_config`, if set, is the original network's
config. Without `--preset` the DHP preset is used (symmetric padding,
projection shortcuts for CIFAR ResNets). The classifier-input policy:
`shrink.check_classifier_input`.
"""

import dataclasses
import hashlib
import json
import os
import time

import keras
import tensorflow as tf
from absl import logging

from tfgraft import complexity
from tfgraft import data as data_lib
from tfgraft import errors
from tfgraft import experiment
from tfgraft import io
from tfgraft import models
from tfgraft import plotting
from tfgraft.lwdna import hypernet as hypernet_lib
from tfgraft.lwdna import shrink as shrink_lib
from tfgraft.training import distribute

DEFAULT_PRESET = "dhp"
# `report["equal_flops"]["within_tolerance"]`: |derived / uniform - 1|.
# The threshold search stops within 0.001 of --ratio times the widened
# FLOPs, i.e. within 0.4% of the uniform net's for x2 widening when --ratio
# is `uniform_budget_ratio` (the CIFAR configs).
EQUAL_FLOPS_TOLERANCE = 0.01
# The workdir's records of the search: the derived widths, the search.
CHANNEL_CONFIG = "channel_config.json"
SEARCH = "search.json"


def file_sha256(path):
    """The SHA-256 hex digest of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class Derived(experiment.Method):
    """Trains a derived net, starting from inherited weights if given.

    Args:
        config: `JobConfig` whose model names the derived channel config.
        weights: optional `shrink.derive_weights` output, assigned after
            the net is built (ignored once a checkpoint is restored).
    """

    name = "lwdna_derived"

    def __init__(self, config, weights=None):
        super().__init__(config)
        self.weights = weights

    def init_net(self, net, index):
        if self.weights is not None:
            shrink_lib.assign_weights(net, self.weights)


class LWDNA(experiment.Pipeline):
    """Widen -> two-step hypernetwork search -> derive -> train.

    The job (`train.flags.JOBS`): `run` is the pipeline; each training
    phase is a run of its own in a sub-workdir (`derived/`, `uniform/`).

    Args:
        config: `JobConfig` with `lwdna` set.
    """

    name = "lwdna"

    def __init__(self, config):
        super().__init__(
            experiment.job_config(config, "LWDNA", "lwdna", "an LWDNAConfig")
        )

    # === Configs ===

    @property
    def preset(self):
        return self.config.model.preset or DEFAULT_PRESET

    def original_config(self):
        """The uniform original's `ChannelConfig` (before widening)."""
        return models.model_channel_config(self.config.model, scaled=False)

    def widened_config(self):
        width_mult = self.config.model.width_mult
        config = self.original_config()
        return config if width_mult == 1.0 else config.scaled(width_mult)

    def sub_config(self, channel_config):
        """The `JobConfig` of a plain training run on `channel_config`."""
        model = dataclasses.replace(
            self.config.model,
            width_mult=1.0,
            channel_config=channel_config,
            preset=self.preset,
        )
        return dataclasses.replace(self.config, model=model, lwdna=None)

    def _build_kwargs(self, info):
        return experiment.model_kwargs(self.config.model, info, self.preset)

    # === Search and derivation ===

    def search_and_derive(self, ex, widened):
        """Runs the search in the opened experiment `ex`; returns (derived
        config, search record, weights).

        `weights` is None for `init="reinit"`.
        """
        lw, o, r = self.config.lwdna, self.config.optim, self.config.run
        name = self.config.model.name
        logging.info("Building the widened hypernetwork %s…", name)
        keras.utils.set_random_seed(experiment.net_seed(r.seed, 0))
        # The two search steps run in float32 whatever --precision says:
        # without loss scaling, float16 latent gradients could underflow.
        distribute.set_precision("float32")
        with ex.strategy.scope():
            hypernet = hypernet_lib.build_hypernet(
                name,
                channel_config=widened,
                embedding_dim=lw.embedding_dim,
                model_name="hypernet",
                **self._build_kwargs(ex.info),
            )
        with errors.flag_names(batch_size="search_batch_size"):
            spe = data_lib.steps_per_epoch(ex.source, lw.search_batch_size)
        steps = shrink_lib.search_steps(lw.epochs_grad, spe)
        dataset = data_lib.train_dataset(
            ex.source,
            batch_size=lw.search_batch_size,
            seed=experiment.data_seed(r.seed, 0),
            augment=self.config.data,
        )
        iterator = iter(ex.strategy.experimental_distribute_dataset(dataset))
        logging.info(
            "Search: %d step(s) of batch %d…", steps, lw.search_batch_size
        )
        state = shrink_lib.run_search(
            hypernet,
            iterator,
            strategy=ex.strategy,
            steps=steps,
            global_batch_size=lw.search_batch_size,
            learning_rate=o.learning_rate,
            momentum=o.momentum,
            weight_decay=o.weight_decay,
            jit=distribute.resolve_jit(r.jit, ex.strategy),
        )
        distribute.set_precision(r.precision)
        table = shrink_lib.FlopsTable(hypernet.model, hypernet.plan)
        result = shrink_lib.shrink(
            table,
            hypernet.plan,
            state,
            kind=lw.importance,
            grad_normalize=lw.grad_normalize,
            ratio=lw.ratio,
            remain_percentage=lw.remain_percentage,
            linear_percentage=lw.linear_percentage,
            min_channels=lw.min_channels,
            classifier_input=lw.classifier_input,
            prune_threshold=lw.prune_threshold,
        )
        t = result.search
        logging.info(
            "Threshold search: pt %.6g after %d iteration(s), FLOPs ratio "
            "%.4f (target %.4f)",
            t.threshold,
            t.iterations,
            t.ratio,
            lw.ratio,
        )
        derived = shrink_lib.derived_config(hypernet, result.masks)
        weights = None
        if lw.init == "inherit":
            weights = shrink_lib.derive_weights(hypernet, result.masks)
        record = {
            "steps": state.steps,
            "batch_size": lw.search_batch_size,
            "loss": state.loss,
            "seconds": state.seconds,
            "importance": lw.importance,
            "grad_normalize": lw.grad_normalize,
            "classifier_input": lw.classifier_input,
            "threshold": t.threshold,
            "iterations": t.iterations,
            "converged": t.converged,
            "target_ratio": lw.ratio,
            "ratio": t.ratio,
            "widened_flops": table.total,
            "floors": result.floors,
            "masks": {
                key: "".join("1" if b else "0" for b in mask)
                for key, mask in result.masks.items()
            },
        }
        return derived, record, weights

    # === The run ===

    def phases(self, ex):
        """Widen, search, derive, retrain (and compare); returns the report."""
        # 1. Widen.
        original = self.original_config()
        widened = self.widened_config()
        # 2-3. Search and derive, or reuse the derived widths.
        derived, record, weights = self.derive(ex, original, widened)
        search_phase_seconds = time.perf_counter() - ex.t0
        # 4. Retrain the derived net (and the uniform original).
        logging.info(
            "Training the derived net in %s…",
            os.path.join(ex.workdir, "derived"),
        )
        config_path = os.path.join(ex.workdir, CHANNEL_CONFIG)
        derived_report = ex.sub_run(
            Derived(self.sub_config(config_path), weights), "derived"
        )
        uniform_report = None
        if self.config.lwdna.train_uniform:
            logging.info(
                "Training the uniform original in %s…",
                os.path.join(ex.workdir, "uniform"),
            )
            uniform = self.sub_config(self.config.model.channel_config)
            uniform_report = ex.sub_run(experiment.Method(uniform), "uniform")

        report = self.lwdna_report(
            ex,
            original,
            widened,
            derived,
            record,
            derived_report,
            uniform_report,
        )
        report["search_phase_seconds"] = search_phase_seconds
        report["wall_seconds"] = time.perf_counter() - ex.t0
        if ex.is_chief:
            plot_widths(
                os.path.join(ex.workdir, "widths.png"),
                original,
                widened,
                derived,
                title=f"{self.config.model.name}: LW-DNA widths",
            )
        ex.write_report(report)
        return report

    def derive(self, ex, original, widened):
        """The derived `ChannelConfig`, the search record and the inherited
        weights (None when reused, see "Resuming", or for `init="reinit"`).
        """
        config_path = os.path.join(ex.workdir, CHANNEL_CONFIG)
        search_path = os.path.join(ex.workdir, SEARCH)
        resumed = (
            os.path.exists(config_path)
            and os.path.exists(search_path)
            and tf.train.latest_checkpoint(
                os.path.join(ex.workdir, "derived", "checkpoints")
            )
        )
        if resumed:
            logging.info(
                "Reusing %s (derived run has checkpoints)", config_path
            )
            record = self.saved_search(ex.workdir)
            return models.ChannelConfig.load(config_path), record, None
        lw = self.config.lwdna
        budget = self._cost(ex, original)["flops"]
        total = self._cost(ex, widened)["flops"]
        logging.info(
            "Budget: --ratio=%.4f of the widened net's %d DHP FLOPs is "
            "%.4fx the uniform net's %d (--ratio=%.4f matches them)",
            lw.ratio,
            total,
            lw.ratio * total / budget,
            budget,
            budget / total,
        )
        derived, record, weights = self.search_and_derive(ex, widened)
        # Every worker writes the (identical) config it trains from, so
        # multi-worker runs need no shared file system for it.
        derived.save(config_path)
        record["channel_config_sha256"] = file_sha256(config_path)
        if ex.is_chief:
            io.atomic_write_json(search_path, record)
        return derived, record, weights

    def saved_search(self, workdir):
        """The run's `search.json`; stops when `channel_config.json`
        differs from what the search wrote (older runs lack the hash)."""
        config_path = os.path.join(workdir, CHANNEL_CONFIG)
        with open(os.path.join(workdir, SEARCH)) as f:
            record = json.load(f)
        want = record.get("channel_config_sha256")
        if want is not None and file_sha256(config_path) != want:
            raise hypernet_lib.LWDNAError(
                f"{config_path}: edited since the search wrote it (derived/ "
                "was trained with the written widths); restore the file or "
                "use a new --workdir"
            )
        return record

    def export_from_checkpoint(
        self, workdir, net_index, export_dir, overwrite=False
    ):
        """Exports the derived net of `derived/checkpoints` (the run's
        `derived/export/`), built from the run's `channel_config.json`."""
        config_path = os.path.join(workdir, CHANNEL_CONFIG)
        for path in (config_path, os.path.join(workdir, SEARCH)):
            if not os.path.isfile(path):
                raise hypernet_lib.LWDNAError(
                    f"{path}: missing; the run's search has not finished"
                )
        self.saved_search(workdir)
        return Derived(self.sub_config(config_path)).export_from_checkpoint(
            os.path.join(workdir, "derived"),
            net_index,
            export_dir,
            overwrite=overwrite,
        )

    # === Report ===

    def _cost(self, ex, channel_config):
        """DHP FLOPs/params and Keras's trainable count of one config."""
        net = models.build_model(
            self.config.model.name,
            channel_config=channel_config,
            model_name="count",
            **self._build_kwargs(ex.info),
        )
        cost = complexity.count(net, "dhp")
        return {
            "flops": int(cost.flops),
            "params": int(cost.params),
            "trainable_params": experiment.count_params(net),
        }

    def lwdna_report(
        self, ex, original, widened, derived, record, derived_report, uniform
    ):
        def summary(report, cost):
            keys = ("final_top1", "final_top5", "best_top1", "best_epoch")
            net = report["nets"][0] if report is not None else {}
            entry = {k: net.get(k) for k in keys}
            for k in ("flops", "params", "trainable_params"):
                entry[k] = cost[k]
            entry["trained"] = report is not None
            return entry

        costs = {
            "original": self._cost(ex, original),
            "widened": self._cost(ex, widened),
            "derived": self._cost(ex, derived),
        }
        widened_flops = costs["widened"]["flops"]
        for entry in costs.values():
            entry["ratio_to_widened"] = entry["flops"] / widened_flops
        base, ours = costs["original"], costs["derived"]
        flops_ratio = ours["ratio_to_original"] = ours["flops"] / base["flops"]
        equal_flops = {
            "convention": "dhp",
            "flops_ratio": flops_ratio,
            "params_ratio": ours["params"] / base["params"],
            "tolerance": EQUAL_FLOPS_TOLERANCE,
            "within_tolerance": abs(flops_ratio - 1) <= EQUAL_FLOPS_TOLERANCE,
            "target_ratio": self.config.lwdna.ratio,
            "uniform_budget_ratio": base["flops"] / widened_flops,
        }
        if not equal_flops["within_tolerance"]:
            logging.warning(
                "The derived net has %.4fx the uniform net's DHP FLOPs "
                "(tolerance %g); --ratio=%.4f would target them exactly.",
                flops_ratio,
                EQUAL_FLOPS_TOLERANCE,
                equal_flops["uniform_budget_ratio"],
            )
        search = {k: v for k, v in record.items() if k not in ("masks",)}
        return {
            "job": self.name,
            "model": self.config.model.name,
            "dataset": ex.info.name,
            "preset": self.preset,
            "width_mult": self.config.model.width_mult,
            "lwdna": dataclasses.asdict(self.config.lwdna),
            "complexity_convention": "dhp",
            "complexity": costs,
            "widths": {
                slot: {
                    "original": original.widths[slot],
                    "widened": widened.widths[slot],
                    "derived": derived.widths[slot],
                }
                for slot in original.widths
            },
            "search": search,
            "derived": summary(derived_report, ours),
            "uniform": summary(uniform, base),
            "equal_flops": equal_flops,
            "epochs": derived_report["epochs"],
        }


def plot_widths(path, original, widened, derived, title="LW-DNA widths"):
    """Writes a PNG of the per-slot widths of the three configs."""
    plt = plotting.pyplot(path)
    if plt is None:
        return

    slots = list(original.widths)
    x = range(len(slots))
    fig, ax = plt.subplots(figsize=(max(6, 0.28 * len(slots) + 2), 4))
    for config, style, color, label in (
        (widened, ":", "gray", "widened"),
        (original, "s--", "C0", "original (uniform)"),
        (derived, "o-", "C3", "LW-DNA (derived)"),
    ):
        widths = [config.widths[s] for s in slots]
        # (The dotted line has no markers.)
        ax.plot(x, widths, style, color=color, markersize=3, label=label)
    plotting.layer_ticks(ax, slots)
    ax.set_ylabel("output channels")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    plotting.save(fig, path)
