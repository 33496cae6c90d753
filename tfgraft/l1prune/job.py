"""The L1 pruning job: pretrained net -> L1 prune to a FLOPs cut -> fine-tune.

Phases, each leaving its results in the workdir so a rerun resumes:

1. **Pretrained net.** `--pretrained` (a `train.baseline` workdir or a
   checkpoint, `tfgraft.pretrained`), or, with `--pretrain_epochs=N`, a
   baseline run of the same model in `<workdir>/pretrain` (skipped once its
   `report.json` exists).
2. **Pruning** (`tfgraft.l1prune.prune`): filters ranked by L1 norm, one
   fraction shared by all prunable groups searched so that the FLOPs cut
   (PFF counter, as the stripe job reports it) is `--target_flops_cut`
   within `--target_tolerance`; the pruned net gets the kept weights. Its
   widths go to `<workdir>/channel_config.json` (with the model, preset and
   shortcut; `python -m train.baseline --channel_config=...` retrains them
   from scratch), its initial weights to `<workdir>/prune/checkpoint`, and
   `<workdir>/prune/result.json` (written last, so it marks the phase as
   done) records the plan, the costs and the accuracies before and right
   after pruning. A rerun with `result.json` present reuses all three and
   never prunes again, so a resumed run fine-tunes the same net.
3. **Fine-tuning** of the pruned net with the usual optimizer and schedule
   flags through `tfgraft.training.loop.fit` (checkpoints, resume,
   history, summaries), then `export/` (the pruned SavedModel).

`report.json` is the base job's report of the fine-tuned net plus an
`l1prune` section: the target and achieved cut, the shared fraction, the
PFF and MACs FLOPs/params before and after, the accuracy of the pretrained
net, of the pruned net before fine-tuning and after (final and best), the
groups and the widths.
"""

import dataclasses
import json
import os
import time

import tensorflow as tf
from absl import logging

from tfgraft import complexity
from tfgraft import data as data_lib
from tfgraft import errors
from tfgraft import experiment
from tfgraft import io
from tfgraft import models
from tfgraft import pretrained as pretrained_lib
from tfgraft.l1prune import prune as prune_lib
from tfgraft.training import evaluation

CONVENTION = "pff"
# The pruned net's widths, in the workdir.
CHANNEL_CONFIG = "channel_config.json"


def _accuracy(model, dataset):
    result = evaluation.evaluate_model(model, dataset)
    return {"top1": result["top1"], "top5": result["top5"]}


def _costs(before, after):
    out = {}
    for convention in (CONVENTION, "macs"):
        b = complexity.count(before, convention)
        a = complexity.count(after, convention)
        out[convention] = {
            "before": {"flops": int(b.flops), "params": int(b.params)},
            "after": {"flops": int(a.flops), "params": int(a.params)},
            "flops_reduction_pct": 100.0 * (1 - a.flops / b.flops),
            "params_reduction_pct": 100.0 * (1 - a.params / b.params),
        }
    return out


class L1Prune:
    """L1-norm filter pruning to a FLOPs cut, then fine-tuning (one net).

    The job (`train.flags.JOBS`): `run` is the pipeline pretrained net ->
    prune -> fine-tune. After a run, `experiment` is the run's
    `Experiment` and `pruned` the pruned net before fine-tuning.

    Args:
        config: a `JobConfig` with `l1prune` set; `model` describes the
            unpruned (pretrained) net.
    """

    name = "l1prune"
    num_nets = 1

    def __init__(self, config):
        if config.l1prune is None:
            raise ValueError("L1Prune needs config.l1prune (an L1PruneConfig)")
        self.config = config
        self.pruned = None
        self.pruned_config = None

    def run(self, workdir, **kwargs):
        """Runs the phases in `workdir`; returns the report dict.

        Args:
            workdir: the run folder.
            **kwargs: `experiment.Experiment` keyword arguments.
        """
        ex = self.experiment = experiment.Experiment(self, workdir, **kwargs)
        with ex.opened():
            # 1. The pretrained net (a baseline run of its own if needed).
            pretrained = pretrained_lib.locate_or_pretrain(
                self.config,
                ex.workdir,
                self.config.l1prune,
                strategy=ex.strategy,
                force_resume=ex.force_resume,
            )
            # 2. Pruning, or its saved result.
            result = self._load_prune(ex, pretrained) or self._prune(
                ex, pretrained
            )
            # 3. Fine-tuning.
            return ex.train(
                FineTune(self.config, self.pruned_config, self.pruned, result)
            )

    def export_from_checkpoint(self, workdir, *args, **kwargs):
        """Exports the fine-tuned net of the run in `workdir`."""
        return FineTune(self.config).export_from_checkpoint(
            workdir, *args, **kwargs
        )

    # === Phase 2: pruning ===

    def _settings(self, ex, pretrained):
        c = self.config.l1prune
        return {
            "pretrained": os.path.abspath(pretrained),
            "model": dataclasses.asdict(self.config.model),
            "dataset": ex.info.name,
            "target_flops_cut": c.target_flops_cut,
            "target_tolerance": c.target_tolerance,
            "prune_streams": c.prune_streams,
            "convention": CONVENTION,
        }

    def _load_prune(self, ex, pretrained):
        path = os.path.join(ex.workdir, "prune", "result.json")
        if not os.path.isfile(path):
            return None
        with open(path) as f:
            result = json.load(f)
        saved = result["settings"]
        for key, value in self._settings(ex, pretrained).items():
            if saved.get(key) != value:
                raise prune_lib.L1PruneError(
                    f"--workdir={ex.workdir}: prune/ was made with "
                    f"{key}={saved.get(key)}, this run has {value}; use a "
                    "new workdir"
                )
        prune_dir = os.path.join(ex.workdir, "prune")
        logging.info("Reusing the pruned net of %s…", prune_dir)
        self.pruned_config = models.ChannelConfig.load(
            os.path.join(ex.workdir, CHANNEL_CONFIG)
        )
        self.pruned = experiment.plain_net(
            self.config, ex.info, self.pruned_config, "pruned"
        )
        tf.train.Checkpoint(pruned=self.pruned).read(
            os.path.join(prune_dir, "checkpoint")
        ).assert_existing_objects_matched()
        return result

    def _prune(self, ex, pretrained):
        c, m = self.config.l1prune, self.config.model
        logging.info("Loading the pretrained net from %s…", pretrained)
        plain = experiment.plain_net(
            self.config, ex.info, models.model_channel_config(m), "pretrained"
        )
        _, _, trained = pretrained_lib.resolve(pretrained)
        pretrained_lib.check_config(pretrained, trained, m)
        read = pretrained_lib.load(pretrained, plain, m.name)
        with errors.flag_names(batch_size="eval_batch_size"):
            test_ds = data_lib.eval_dataset(
                ex.source, batch_size=self.config.data.eval_batch_size
            )
        pretrained_acc = _accuracy(plain, test_ds)
        logging.info("Pretrained net: top1 %.4f", pretrained_acc["top1"])
        t0 = time.perf_counter()
        plan = prune_lib.plan_pruning(
            plain,
            m.name,
            target_flops_cut=c.target_flops_cut,
            target_tolerance=c.target_tolerance,
            prune_streams=c.prune_streams,
            preset=m.preset,
            shortcut=m.shortcut,
            convention=CONVENTION,
        )
        self.pruned = prune_lib.build_pruned(plain, plan, model_name="pruned")
        self.pruned_config = plan.channel_config
        prune_seconds = time.perf_counter() - t0
        pruned_acc = _accuracy(self.pruned, test_ds)
        costs = _costs(plain, self.pruned)
        achieved = 1.0 - (
            costs[CONVENTION]["after"]["flops"]
            / costs[CONVENTION]["before"]["flops"]
        )
        logging.info(
            "l1prune | fraction: %.4f | FLOPs cut: %.4f (target %.4f, pff) "
            "| params -%.1f%% | pruned top1: %.4f before fine-tuning",
            float(plan.fraction),
            achieved,
            c.target_flops_cut,
            costs[CONVENTION]["params_reduction_pct"],
            pruned_acc["top1"],
        )
        plan_dict = plan.as_dict()
        result = {
            "settings": self._settings(ex, pretrained),
            "pretrained_checkpoint": read,
            "fraction": plan_dict["fraction"],
            "fraction_exact": plan_dict["fraction_exact"],
            "flops_cut": achieved,
            "search_evaluations": plan.evaluations,
            "groups": plan_dict["groups"],
            "kept": plan_dict["kept"],
            "channel_config": dict(plan.channel_config.widths),
            "original_widths": dict(plan.original_config.widths),
            "complexity": costs,
            "accuracy": {"pretrained": pretrained_acc, "pruned": pruned_acc},
            "prune_seconds": prune_seconds,
        }
        if ex.is_chief:
            prune_dir = os.path.join(ex.workdir, "prune")
            os.makedirs(prune_dir, exist_ok=True)
            tf.train.Checkpoint(pruned=self.pruned).write(
                os.path.join(prune_dir, "checkpoint")
            )
            # Atomic.
            self.pruned_config.save(os.path.join(ex.workdir, CHANNEL_CONFIG))
            # Written last: its presence marks the phase as complete.
            io.atomic_write_json(
                os.path.join(prune_dir, "result.json"), result
            )
        return result



class FineTune(experiment.Method):
    """Phase 3: fine-tunes the pruned net (the run's `l1prune` report).

    Args:
        config: the job's `JobConfig`.
        channel_config: the pruned net's widths; default: the run's
            `channel_config.json` (`train.export`).
        pruned: the pruned net, whose weights the net starts from.
        prune_result: the pruning phase's `prune/result.json`.
    """

    name = "l1prune"

    def __init__(
        self, config, channel_config=None, pruned=None, prune_result=None
    ):
        super().__init__(config)
        self.pruned_config = channel_config
        self.pruned = pruned
        self.prune_result = prune_result

    def channel_config(self, ex):
        if self.pruned_config is None:
            # train.export: the widths a finished or interrupted run saved.
            self.pruned_config = models.ChannelConfig.load(
                os.path.join(ex.workdir, CHANNEL_CONFIG)
            )
        return self.pruned_config

    def init_net(self, net, index):
        if self.pruned is not None:
            net.set_weights(self.pruned.get_weights())

    def report_extras(self, ex, trainer, history):
        r, c = self.prune_result, self.config.l1prune
        evals = [h for h in history if "test" in h]
        accs = [h["test"]["nets"][0]["top1"] for h in evals]
        best = max(range(len(accs)), key=accs.__getitem__) if accs else None
        finetuned = {
            "final_top1": accs[-1] if accs else None,
            "final_top5": evals[-1]["test"]["nets"][0]["top5"]
            if evals
            else None,
            "best_top1": accs[best] if accs else None,
            "best_epoch": evals[best]["epoch"] if accs else None,
        }
        return {
            "l1prune": {
                "pretrained": r["settings"]["pretrained"],
                "pretrained_checkpoint": r["pretrained_checkpoint"],
                "convention": CONVENTION,
                "target_flops_cut": c.target_flops_cut,
                "target_tolerance": c.target_tolerance,
                "prune_streams": c.prune_streams,
                "flops_cut": r["flops_cut"],
                "fraction": r["fraction"],
                "fraction_exact": r["fraction_exact"],
                "complexity": r["complexity"],
                "accuracy": {**r["accuracy"], "finetuned": finetuned},
                "groups": r["groups"],
                "channel_config": r["channel_config"],
                "original_widths": r["original_widths"],
                "search_evaluations": r["search_evaluations"],
                "prune_seconds": r["prune_seconds"],
            },
        }
