"""The stripe-wise pruning job: train -> best -> prune -> compact -> export.

Phases (METHODS.md §2.2-2.3):

1. train one net built from `StripeConv2D` (preset `pff` unless another is
   given) with the per-step skeleton update (`StripeTrainer`), keeping a
   copy of the best-test-accuracy net (checkpointed with the run, so a
   resumed run prunes the same net);
2. prune that copy once, without fine-tuning, by `fit.strip_dense` (the
   path of `fit.strip_stripes`): hard-masked and compact model, each
   evaluated; the last epoch's net is pruned and evaluated too ("always
   report both", METHODS §0). The threshold is the training `threshold`
   (the reference) or, with `target_flops_cut`, the one
   `flops_target.threshold_for_flops_cut` picks at or above it. The
   selection stays the reference's best test accuracy over the epochs:
   every checkpoint can be thresholded up to the target, and one that
   training pruned past it (reported with `within_tolerance: false`) is
   both smaller and more accurate than the others. When a residual block
   lost a branch, the compact model is also built and evaluated in the
   other `dead_branches` form (the exported one is the configured form);
3. export the compact model to `export/` (SavedModel, runs without
   tfgraft), the hard-masked net to `export_masked/`, the compact Keras
   model to `compact.keras` (needs tfgraft to load);
4. `report.json` gets a `stripe` section (README.md's "The other
   methods"); `stripes.png` and `filters.png` draw the kept stripes per
   layer.

With `threshold == 0` and no target nothing is pruned: the best net is
exported as is.
"""

import math
import os
import time

import keras
import tensorflow as tf
from absl import logging

from tfgraft import experiment
from tfgraft import io
from tfgraft.layers.stripe_conv import StripeConv2D
from tfgraft.stripe import fit as fit_lib
from tfgraft.stripe import flops_target
from tfgraft.stripe import plot as plot_lib
from tfgraft.stripe import prune as prune_lib
from tfgraft.stripe import trainer as trainer_lib
from tfgraft.training import evaluation
from tfgraft.training import loop


class StripeStatsHook(loop.Hook):
    """Adds kept stripes/filters of net 0 to each epoch's log."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_epoch_end(self, epoch, logs, last):
        t = self.trainer
        layers = prune_lib.layer_stripes(t.nets[0], t.threshold, t.plans[0])
        if not layers:
            return
        totals = logs["stripe"] = prune_lib.stripe_totals(layers)
        kept, stripes = totals["kept_stripes"], totals["stripes"]
        scalars = logs.setdefault("scalars", {})
        scalars["net_0/kept_stripe_fraction"] = kept / max(stripes, 1)
        logging.info(
            "stripe | epoch: %d | kept stripes: %d/%d | kept filters: %d",
            epoch + 1,
            kept,
            stripes,
            totals["kept_filters"],
        )


# The `--steer_sr` controller (a tfgraft addition, not in the paper).
STEER_GAIN = 5.0
STEER_RAMP = 0.75  # share of the epochs by which the cut reaches the target
STEER_CLIP = (0.5, 2.0)  # bounds of one epoch's sr factor


def steered_sr(sr, cut, target, epoch, epochs, *, gain=STEER_GAIN):
    """One epoch-end step of the `--steer_sr` controller (pure).

    The wanted FLOPs cut at the training threshold after epoch `epoch`
    (0-based) of `epochs` ramps linearly to the target by `STEER_RAMP` of
    the epochs: `desired = target * min(1, (epoch + 1) / (0.75 * epochs))`.
    The L1 strength moves multiplicatively towards it:
    `sr * clip(exp(gain * (desired - cut)), 0.5, 2.0)` -- stronger when
    training has removed too little, weaker when it removed too much, by
    at most a factor 2 per epoch.

    Args:
        sr: the L1 strength used during the epoch, > 0.
        cut: the FLOPs cut of the compact model at the training threshold
            after the epoch.
        target: the wanted final cut (`--target_flops_cut`).
        epoch: the epoch that ended, 0-based.
        epochs: the run's epochs.
        gain: the controller's gain.

    Returns:
        `(new_sr, desired)`.
    """
    desired = target * min(1.0, (epoch + 1) / (STEER_RAMP * epochs))
    factor = math.exp(gain * (desired - cut))
    factor = min(max(factor, STEER_CLIP[0]), STEER_CLIP[1])
    return sr * factor, desired


def training_cut(net, threshold, flops_before=None):
    """The `pff` FLOPs cut of compacting `net` at `threshold`.

    A net that cannot be compacted there (a conv without stripes that no
    shortcut bypasses) counts as cut 1: the L1 term removed too much.
    """
    try:
        return flops_target.flops_cut(
            prune_lib.copy_model(net), threshold, flops_before=flops_before
        )[0]
    except prune_lib.StripePruningError:
        return 1.0


class SrSteeringHook(loop.Hook):
    """`--steer_sr`: adapts the trainer's `sr_variable` at each epoch end.

    Measures net 0's FLOPs cut at the training threshold, logs it with the
    `sr` the epoch used (history `steer`, TensorBoard `net_0/sr`,
    `net_0/train_threshold_flops_cut`) and assigns `steered_sr`'s next
    value; the variable is in the trainer's checkpoint, so a resumed run
    continues with the same `sr`. An epoch end where a session stops
    mid-epoch (`--max_steps`) steers nothing: the resumed run finishes
    that epoch and steers once, as an uninterrupted run does.
    """

    def __init__(self, trainer, target, epochs, steps_per_epoch):
        if trainer.sr_variable is None:
            raise ValueError(
                "SrSteeringHook needs a StripeTrainer(steer_sr=True)"
            )
        self.trainer = trainer
        self.target = target
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self._flops_before = None

    def on_epoch_end(self, epoch, logs, last):
        if logs["step"] < (epoch + 1) * self.steps_per_epoch:
            return  # a session stopped mid-epoch
        net = self.trainer.nets[0]
        if self._flops_before is None:
            dense = prune_lib.copy_model(net)
            self._flops_before = prune_lib.cost(dense, "pff")["flops"]
        cut = training_cut(net, self.trainer.threshold, self._flops_before)
        sr = float(self.trainer.sr_variable.numpy())
        new_sr, desired = steered_sr(sr, cut, self.target, epoch, self.epochs)
        self.trainer.sr_variable.assign(new_sr)
        logs["steer"] = {
            "sr": sr,
            "cut": cut,
            "desired": desired,
            "next_sr": new_sr,
        }
        scalars = logs.setdefault("scalars", {})
        scalars["net_0/sr"] = sr
        scalars["net_0/train_threshold_flops_cut"] = cut
        logging.info(
            "stripe | epoch: %d | sr: %.4g | cut at --threshold: %.4f "
            "(wanted %.4f) | next sr: %.4g",
            epoch + 1,
            sr,
            cut,
            desired,
            new_sr,
        )

    def describe(self, logs):
        steer = logs.get("steer")
        if not steer:
            return ""
        return f"sr {steer['sr']:.3g} cut {steer['cut']:.3f}"


def steer_report(history):
    """report.json's `steer` entry: the controller and the sr trajectory."""
    return {
        "gain": STEER_GAIN,
        "ramp": STEER_RAMP,
        "clip": list(STEER_CLIP),
        "epochs": [
            {"epoch": h["epoch"], **h["steer"]}
            for h in history
            if "steer" in h
        ],
    }


def freeze_all_but_skeletons(net):
    """Shape-only training: every variable but the skeletons is frozen.

    Variables are frozen one by one (not `layer.trainable = False`), so BN
    keeps normalising with batch statistics in training mode.
    """
    for layer in net.layers:
        for var in layer.trainable_weights:
            is_fs = isinstance(layer, StripeConv2D) and (
                var is layer.filter_skeleton
            )
            if not is_fs:
                var.trainable = False
    return net


def _evaluate(model, dataset):
    result = evaluation.evaluate_model(model, dataset)
    return {"top1": result["top1"], "top5": result["top5"]}


def _record_cut(target, pff):
    """Adds a compact model's FLOPs cut (`pff`: its `prune.reduction`) to
    a target report."""
    cut = 1.0 - pff["after"]["flops"] / pff["before"]["flops"]
    target["achieved_cut"] = cut
    target["within_tolerance"] = bool(
        abs(cut - target["flops_cut"]) <= target["tolerance"] + 1e-12
    )


def _target_report(result):
    """report.json's `target` of a `fit.StripResult` (None without one)."""
    r = result.target
    if r is None:
        return None
    target = {
        "flops_cut": r.target,
        "tolerance": r.tolerance,
        "threshold": r.threshold,
        "convention": r.convention,
    }
    _record_cut(target, result.complexity["pff"])
    return target


class Stripe(experiment.Method):
    """Stripe-wise pruning with a Filter Skeleton (one net).

    After a run, `_compact`, `_masked` and `_other_form` hold the compact
    model, the hard-masked net and the compact model in the other
    `dead_branches` form (None where not made).
    """

    name = "stripe"
    conv_layer = StripeConv2D

    def __init__(self, config):
        # Preset `pff`: the reference's models (METHODS §2.3).
        super().__init__(
            experiment.job_config(
                config, "Stripe", "stripe", "a StripeConfig", preset="pff"
            )
        )
        self._compact = None
        self._other_form = None
        self._masked = None
        self._dense = None

    @property
    def stripe(self):
        return self.config.stripe

    def init_net(self, net, index):
        if self.stripe.shape_only:
            freeze_all_but_skeletons(net)

    def make_trainer(self, nets, optimizers, strategy, **options):
        return trainer_lib.StripeTrainer(
            nets,
            optimizers,
            strategy,
            sr=self.stripe.sr,
            threshold=self.stripe.threshold,
            steer_sr=self.stripe.steer_sr,
            **options,
        )

    def keeps_best(self):
        return True  # the prune phase prunes the best-test net

    def hooks(self, ex, trainer):
        hooks = [StripeStatsHook(trainer)]
        if self.stripe.steer_sr:
            hooks.append(
                SrSteeringHook(
                    trainer,
                    self.stripe.target_flops_cut,
                    self.config.run.epochs,
                    ex.steps_per_epoch,
                )
            )
        return hooks

    # === Prune phase ===

    def after_fit(self, ex, trainer, history):
        t0 = time.perf_counter()
        # The evaluations of the prune phase (its helpers read it).
        self.eval_dataset = ex.eval_dataset
        self._stripe_report = self.prune(ex, trainer, history)
        self._stripe_report["prune_seconds"] = time.perf_counter() - t0

    def report_extras(self, ex, trainer, history):
        return {"stripe": self._stripe_report}

    def prune(self, ex, trainer, history=()):
        """Prunes and compacts the best (and the last) net; returns stats."""
        s = self.stripe
        best = ex.best_tracker
        best_epoch = int(best.best_epoch.numpy())
        source = trainer.nets[0]
        if best_epoch > 0:
            source = best.best_net
        report = {
            "sr": s.sr,
            "threshold": s.threshold,
            "shape_only": s.shape_only,
            "formulation": s.formulation,
            "compact_jit": s.compact_jit,
            "dead_branches": s.dead_branches,
            "update_active": trainer.active,
            "selection": "best_test" if best_epoch > 0 else "last",
            "epoch": best_epoch if best_epoch > 0 else None,
            "trained_top1": float(best.best.numpy())
            if best_epoch > 0
            else None,
            "target": None,
            "prune_threshold": None,
            "steer_sr": s.steer_sr,
        }
        if s.steer_sr:
            report["steer"] = steer_report(history)
        if s.threshold > 0 or s.target_flops_cut:
            logging.info("Pruning the %s net…", report["selection"])
        dense = prune_lib.copy_model(source)
        result = self._strip(dense, s.target_flops_cut, "selected")
        if result.masked is None:
            self._dense = result.model
            report["complexity"] = result.complexity
            report["pruned"] = False
            return report
        self._masked, self._compact = result.masked, result.model
        masked_acc = _evaluate(result.masked, self.eval_dataset)
        compact_acc = _evaluate(result.model, self.eval_dataset)
        accuracy = {
            "before_top1": report["trained_top1"],
            "hard_masked_top1": masked_acc["top1"],
            "compact_top1": compact_acc["top1"],
            "compact_top5": compact_acc["top5"],
        }
        if result.removed_blocks:
            accuracy["dead_branches"], self._other_form = self._both_forms(
                result, compact_acc["top1"], log=True
            )
        report.update(
            {
                "pruned": True,
                "accuracy": accuracy,
                **result.as_dict(),
                "target": _target_report(result),
            }
        )
        if s.extra_cuts:
            report["extra_cuts"] = [
                self._extra_cut(dense, cut) for cut in s.extra_cuts
            ]
        last = history[-1]["epoch"] if history else None
        if best_epoch > 0 and best_epoch == last:
            report["last_epoch"] = {"same_as_best": True}
        elif best_epoch > 0:
            report["last_epoch"] = self._last_epoch_stats(trainer)
        logging.info(
            "stripe | masked top1: %.4f | compact top1: %.4f | FLOPs -%.1f%% "
            "| params -%.1f%% (pff) | threshold: %.4g",
            masked_acc["top1"],
            compact_acc["top1"],
            report["complexity"]["pff"]["flops_reduction_pct"],
            report["complexity"]["pff"]["params_reduction_pct"],
            result.threshold,
        )
        if ex.is_chief:
            plot_lib.plot_stripes(
                os.path.join(ex.workdir, "stripes.png"), result.layers
            )
            plot_lib.plot_filters(
                os.path.join(ex.workdir, "filters.png"), result.layers
            )
        return report

    def _compact_options(self, dead_branches):
        """`prune.compact`'s options: the job's, in a dead-branch form."""
        s = self.stripe
        return dict(
            formulation=s.formulation,
            jit_compile=s.compact_jit,
            calibrate_batch=s.calibrate_batch,
            dead_branches=dead_branches,
        )

    def _strip(self, dense, cut, label=None):
        """`fit.strip_dense` of `dense` with the job's stripe settings, at
        the FLOPs cut `cut` (if any; stripes the training masked stay
        pruned); the chosen threshold is logged as the `label` net's."""
        s = self.stripe
        result = fit_lib.strip_dense(
            dense,
            s.threshold,
            target_flops_cut=cut,
            tolerance=s.target_tolerance,
            **self._compact_options(s.dead_branches),
        )
        r = result.target
        if label is None or r is None:
            return result
        logging.info(
            "stripe | %s net | target FLOPs cut: %.3f +- %.3f | threshold: "
            "%.4g | achieved: %.4f (%d compactions)",
            label,
            r.target,
            r.tolerance,
            r.threshold,
            r.cut,
            r.evaluations,
        )
        if not r.within_tolerance:
            logging.warning(
                "The %s net's FLOPs cut %.4f is not within %.3f of the "
                "target %.3f (%s).",
                label,
                r.cut,
                r.tolerance,
                r.target,
                "training already removed more (stripes at or below "
                "--threshold); lower --sr"
                if r.cut > r.target and r.threshold == s.threshold
                else "the cut moves by a whole filter or block here, or "
                "a higher threshold leaves a conv without stripes",
            )
        return result

    def _extra_cut(self, dense, cut):
        """Prunes `dense` at another FLOPs cut; its compact net's figures.

        Both dead-branch forms are evaluated when a block lost a branch.
        """
        # `dense` itself stays unmasked: a cut below the selected one must
        # see the stripes the selected threshold removed.
        result = self._strip(dense, cut)
        pff = result.complexity["pff"]
        top1 = _evaluate(result.model, self.eval_dataset)["top1"]
        out = {
            "flops_cut": cut,
            "tolerance": self.stripe.target_tolerance,
            "threshold": result.threshold,
            "compact_top1": top1,
            "pff": pff["after"],
            "removed_blocks": len(result.removed_blocks),
        }
        _record_cut(out, pff)
        if result.removed_blocks:
            out["dead_branches"], _ = self._both_forms(result, top1)
        logging.info(
            "stripe | extra cut %.3f | achieved %.4f | compact top1 %.4f",
            cut,
            out["achieved_cut"],
            top1,
        )
        return out

    def _both_forms(self, result, top1, log=False):
        """`({form: top1} of both dead-branch forms, the other form's
        compact model)` of a pruned `result`, `top1` the configured form's.

        Called when a block lost a branch, so the forms differ.
        """
        form = self.stripe.dead_branches
        other = "shortcut" if form == "constant" else "constant"
        other_result = prune_lib.compact(
            result.masked, result.threshold, **self._compact_options(other)
        )
        acc = _evaluate(other_result.model, self.eval_dataset)
        if log:
            logging.info(
                "stripe | removed blocks: %d | compact top1 with dead "
                "branches as %s: %.4f, as %s: %.4f",
                len(other_result.removed_blocks),
                form,
                top1,
                other,
                acc["top1"],
            )
        return {form: top1, other: acc["top1"]}, other_result.model

    def _last_epoch_stats(self, trainer):
        dense = prune_lib.copy_model(trainer.nets[0])
        try:
            result = self._strip(dense, self.stripe.target_flops_cut, "last")
        except prune_lib.StripePruningError as e:
            return {"error": str(e)}
        masked_top1 = _evaluate(result.masked, self.eval_dataset)["top1"]
        stats = {
            "hard_masked_top1": masked_top1,
            "compact_top1": _evaluate(result.model, self.eval_dataset)["top1"],
            "pff": result.complexity["pff"]["after"],
            "removed_blocks": [list(b) for b in result.removed_blocks],
            "prune_threshold": result.threshold,
        }
        target = _target_report(result)
        if target is not None:
            stats["target"] = target
        return stats

    # === Outputs ===

    def exported_net(self, ex, net_index):
        """What the run exports to `export/`, from its checkpoint.

        The net of the newest checkpoint the run would prune (the best
        test net so far, else the last), pruned and compacted exactly as
        `prune` does (same threshold or FLOPs target); needs no data, so
        an interrupted run exports the compact net of its best epoch.
        """
        net = ex.net_from_checkpoint(net_index)
        best = ex.build_net(0, ex.info)
        best_epoch = tf.Variable(-1, trainable=False, name="best_epoch")
        experiment.restore_items(
            ex.latest_checkpoint(),
            {"best_net": best, "best_epoch": best_epoch},
        )
        source = best if int(best_epoch.numpy()) > 0 else net
        dense = prune_lib.copy_model(source)
        result = self._strip(dense, self.stripe.target_flops_cut, "selected")
        return result.model

    def export(self, ex, trainer):
        export_dir = os.path.join(ex.workdir, "export")
        if self._compact is None:
            net = trainer.nets[0] if self._dense is None else self._dense
            ex.save_models({export_dir: net})
            return
        ex.save_models(
            {
                export_dir: self._compact,
                os.path.join(ex.workdir, "export_masked"): self._masked,
            }
        )
        path = os.path.join(ex.workdir, "compact.keras")
        tmp = os.path.join(ex.workdir, ".compact.tmp.keras")
        try:
            self._compact.save(tmp)
            os.replace(tmp, path)
        except OSError as e:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise io.write_error(path, e) from None
