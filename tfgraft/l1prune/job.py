"""The L1 pruning job: pretrained net -> L1 prune to a FLOPs cut -> fine-tune.

Phases, each leaving its results in the workdir so a rerun resumes:

1. **Pretrained net.** `--pretrained`, or a pretraining run
   (`tfgraft.pretrained.locate_or_pretrain`).
2. **Pruning** (`tfgraft.l1prune.prune`, PFF FLOPs counter): the pruned
   widths go to `<workdir>/channel_config.json` (with the model, preset
   and shortcut), its initial weights to `<workdir>/prune/checkpoint`, and
   `<workdir>/prune/result.json` (written last) records the plan, the
   costs and the accuracies before and right after pruning. A rerun with
   `result.json` present reuses all three and never prunes again, so a
   resumed run fine-tunes the same net.
3. **Fine-tuning** through `tfgraft.training.loop.fit`, then `export/`
   (the pruned SavedModel).

The method, its deviations from Li et al. and the `l1prune` section of
`report.json` are README.md's "L1 filter pruning".
"""

import os
import time

from absl import logging

from tfgraft import complexity
from tfgraft import experiment
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


def saved_config(workdir):
    """The pruned widths a finished or interrupted run saved."""
    return models.ChannelConfig.load(os.path.join(workdir, CHANNEL_CONFIG))


class FineTune(pretrained_lib.FineTune):
    """Phase 3: fine-tunes the pruned net (the run's `l1prune` report)."""

    name = "l1prune"

    def saved_config(self, workdir):
        return saved_config(workdir)

    def report_extras(self, ex, trainer, history):
        r, c = self.result, self.config.l1prune
        finetuned = experiment.accuracy_summary(history, 0)
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


class L1Prune(pretrained_lib.PruningJob):
    """L1-norm filter pruning to a FLOPs cut, then fine-tuning (one net).

    The job (`train.flags.JOBS`): `run` is the pipeline pretrained net ->
    prune -> fine-tune. After a run, `experiment` is the run's
    `Experiment` and `pruned` the pruned net before fine-tuning.

    Args:
        config: a `JobConfig` with `l1prune` set; `model` describes the
            unpruned (pretrained) net.
    """

    name = "l1prune"
    phase_dir = "prune"
    error = prune_lib.L1PruneError
    fine_tune = FineTune
    section = "l1prune"
    phase_fields = ("target_flops_cut", "target_tolerance", "prune_streams")

    def __init__(self, config):
        super().__init__(
            experiment.job_config(
                config, "L1Prune", "l1prune", "an L1PruneConfig"
            )
        )
        self.pruned = None
        self.pruned_config = None

    def phases(self, ex):
        # 1. The pretrained net (a baseline run of its own if needed).
        pretrained = pretrained_lib.locate_or_pretrain(ex, self.options)
        # 2. Pruning, or its saved result.
        result = self._load_prune(ex, pretrained) or self._prune(
            ex, pretrained
        )
        # 3. Fine-tuning.
        return ex.train(
            FineTune(self.config, self.pruned_config, self.pruned, result)
        )

    # === Phase 2: pruning ===

    def settings(self, ex, pretrained):
        return {**super().settings(ex, pretrained), "convention": CONVENTION}

    def _load_prune(self, ex, pretrained):
        result = self.saved_result(ex, pretrained)
        if result is None:
            return None
        logging.info(
            "Reusing the pruned net of %s…", os.path.join(ex.workdir, "prune")
        )
        self.pruned_config = saved_config(ex.workdir)
        self.pruned = experiment.plain_net(
            self.config, ex.info, self.pruned_config, "pruned"
        )
        self.restore_phase(ex, pruned=self.pruned)
        return result

    def _prune(self, ex, pretrained):
        c, m = self.config.l1prune, self.config.model
        plain, read = self.load_pretrained(
            ex, pretrained, models.model_channel_config(m)
        )
        test_ds = ex.test_dataset()
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
            "settings": self.settings(ex, pretrained),
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
        self.save_phase(
            ex,
            result,
            self.pruned_config,
            os.path.join(ex.workdir, CHANNEL_CONFIG),
            pruned=self.pruned,
        )
        return result
