"""The pretrained net a pruning method starts from (`--pretrained`).

Shared by the jobs that prune a trained network (EKG, L1 filter pruning):
`PruningJob` and its `FineTune`. Accepted forms:

* a `train.baseline` workdir (its newest `checkpoints/` checkpoint; its
  `config.json` is checked against this run's model);
* a folder holding a TF checkpoint (`checkpoint` index file) or a
  checkpoint prefix (`.../ckpt-12`), with the net under the key `net_0`
  (tfgraft jobs) or `net`;
* a Keras `.weights.h5` file.

Every mismatch is a `PretrainedError` with one line naming the path.
Without `--pretrained`, `locate_or_pretrain` trains the unpruned net
first, as a baseline run in `<workdir>/pretrain`.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf
from absl import logging

from tfgraft import config as cfg
from tfgraft import errors
from tfgraft import experiment
from tfgraft import io
from tfgraft import models
from tfgraft.training import workdir as workdir_lib


class PretrainedError(ValueError):
    """`--pretrained` cannot be used for this model; names the path."""


def _fail(path, why):
    raise PretrainedError(f"--pretrained={path}: {why}")


def resolve(path):
    """Returns `(kind, location, config_dict_or_None)` for `--pretrained`.

    `kind` is `"checkpoint"` (a checkpoint prefix) or `"h5"`.
    """
    if not path:
        raise PretrainedError("--pretrained is empty")
    if path.endswith((".keras", ".h5", ".pkl", ".pickle", ".npy", ".npz")) and (
        not path.endswith(".weights.h5")
    ):
        # Whole-model files can carry code (Lambda layers, pickles): never
        # opened; the architecture comes from this run's flags anyway.
        _fail(
            path,
            "whole-model and pickle files are not loaded; pass a "
            ".weights.h5 file, a checkpoint or a train.baseline workdir",
        )
    if path.endswith(".weights.h5"):
        if not os.path.isfile(path):
            _fail(path, "no such file")
        return "h5", path, None
    if os.path.isdir(path):
        ckpt_dir = os.path.join(path, "checkpoints")
        if os.path.isdir(ckpt_dir):
            config = workdir_lib.read_json(os.path.join(path, "config.json"))
            prefix = tf.train.latest_checkpoint(ckpt_dir)
            if prefix is None:
                _fail(path, "the workdir has no checkpoint in checkpoints/")
            return "checkpoint", prefix, config
        prefix = tf.train.latest_checkpoint(path)
        if prefix is None:
            _fail(path, "folder holds neither a workdir nor a checkpoint")
        return "checkpoint", prefix, None
    if os.path.isfile(path + ".index"):
        return "checkpoint", path, None
    _fail(path, "no such workdir, checkpoint or .weights.h5 file")


def _resolved(model):
    """Model settings with the registry defaults filled in."""
    out = dict(model)
    out["preset"] = out.get("preset") or "grafting"
    try:
        _, out["shortcut"] = models.resolve_topology(
            out.get("name"), out["preset"], out.get("shortcut")
        )
    except errors.ArgumentError:
        pass  # an unknown model or setting: compared as written
    return out


def check_config(path, trained, model_config):
    """Raises unless a workdir's `config.json` describes this run's model.

    Args:
        path: the `--pretrained` value (for the message).
        trained: the workdir's `config.json` dict (or None: no check).
        model_config: this run's `ModelConfig`.
    """
    if not trained:
        return
    keys = ("name", "width_mult", "channel_config", "preset", "shortcut")
    theirs = _resolved(trained.get("model", {}))
    ours = _resolved({key: getattr(model_config, key) for key in keys})
    for key in keys:
        if theirs.get(key) != ours[key]:
            flag = "model" if key == "name" else key
            _fail(
                path,
                f"trained with --{flag}={theirs.get(key)}, this run has "
                f"--{flag}={ours[key]}",
            )


def load(path, net, model_name):
    """Loads the pretrained weights into `net` (built, same architecture).

    Args:
        path: the `--pretrained` value.
        net: the built model to load into.
        model_name: its registry name (for the message).

    Returns:
        The checkpoint prefix or file actually read.

    Raises:
        PretrainedError: the checkpoint does not match `net`.
    """
    kind, location, _ = resolve(path)
    try:
        if kind == "h5":
            net.load_weights(location)
            return location
        keys = {
            name.split("/")[0] for name, _ in tf.train.list_variables(location)
        }
        key = "net_0" if "net_0" in keys else "net" if "net" in keys else None
        if key is None:
            _fail(path, "checkpoint has no 'net_0' or 'net' entry")
        # Restoring is lenient (a training checkpoint also holds optimizer
        # slots, step counters, ...); mark every weight with NaN first so
        # that one the checkpoint does not provide is caught afterwards.
        for w in net.weights:
            w.assign(np.full(w.shape, np.nan, w.dtype))
        status = tf.train.Checkpoint(**{key: net}).restore(location)
        status.expect_partial()
        for w in net.weights:
            if np.isnan(w.numpy()).all():
                _fail(
                    path,
                    f"does not match --model={model_name}: the checkpoint "
                    f"has no value for {w.path}",
                )
    except PretrainedError:
        raise
    except (ValueError, AssertionError, tf.errors.OpError) as e:
        _fail(
            path, f"does not match --model={model_name}: {io.first_line(e)}"
        )
    return location


def locate_or_pretrain(ex, options):
    """Returns the `--pretrained` path, pretraining the net first if needed.

    With `pretrained` set it is returned as is (`resolve` checks it later).
    Otherwise `pretrain_epochs > 0` trains `config.model` as a baseline run
    in `<workdir>/pretrain` (Nesterov SGD, momentum 0.9, LR
    `learning_rate` x0.1 at 30/60/90% of the epochs, coupled weight decay
    `weight_decay`; data and run options from `config`), skipped once that
    run's `report.json` exists; an interrupted pretraining resumes from its
    own checkpoints.

    Args:
        ex: the pruning job's opened `Experiment` (its config's data, model
            and run sections describe the pretraining run, a `sub_run`).
        options: the job's method section (`EKGConfig`, `L1PruneConfig`):
            its `pretrained` (a path, or None / ""), `pretrain_epochs`,
            `pretrain_learning_rate` and `pretrain_weight_decay`.

    Raises:
        ConfigError: neither `pretrained` nor `pretrain_epochs > 0`.
    """
    if options.pretrained:
        return options.pretrained
    if options.pretrain_epochs <= 0:
        raise cfg.ConfigError(
            "--pretrained is required unless --pretrain_epochs > 0 "
            "(pretrain in <workdir>/pretrain first)"
        )
    config = ex.config
    path = os.path.join(ex.workdir, "pretrain")
    if os.path.isfile(os.path.join(path, "report.json")):
        logging.info("Pretrained net found in %s", path)
        return path
    n = options.pretrain_epochs
    logging.info(
        "Pretraining %s for %d epochs in %s…", config.model.name, n, path
    )
    pretrain_config = cfg.JobConfig(
        data=config.data,
        model=config.model,
        optim=cfg.OptimConfig(
            learning_rate=options.pretrain_learning_rate,
            momentum=0.9,
            nesterov=True,
            weight_decay=options.pretrain_weight_decay,
            schedule="multistep",
            milestones=(0.3 * n, 0.6 * n, 0.9 * n),
            gamma=0.1,
        ),
        run=dataclasses.replace(config.run, epochs=n, max_steps=0),
    )
    ex.sub_run(experiment.Method(pretrain_config), "pretrain")
    return path


class FineTune(experiment.Method):
    """A `PruningJob`'s last phase: fine-tunes the pruned net.

    Args:
        config: the job's `JobConfig`.
        channel_config: the pruned net's widths; default: the ones the run
            saved (`saved_config`; `train.export`).
        start: the pruned net, whose weights the net starts from.
        result: the pruning phase's `result.json`.
    """

    def __init__(self, config, channel_config=None, start=None, result=None):
        super().__init__(config)
        self.pruned_config = channel_config
        self.start = start
        self.result = result

    def saved_config(self, workdir):
        """The pruned widths the run in `workdir` saved."""
        raise NotImplementedError

    def channel_config(self, ex):
        if self.pruned_config is None:
            self.pruned_config = self.saved_config(ex.workdir)
        return self.pruned_config

    def init_net(self, net, index):
        if self.start is not None:
            net.set_weights(self.start.get_weights())


class PruningJob(experiment.Pipeline):
    """Pretrained net -> a pruning phase -> fine-tuning (`fine_tune`).

    The pruning phase keeps its result in `<workdir>/<phase_dir>/`: a
    checkpoint of its nets and `result.json` (written last, so it marks
    the phase as done), which a rerun reuses.
    """

    phase_dir = None
    # The job's error class, its `FineTune`, its `JobConfig` section and
    # the section's fields the pruning phase depends on.
    error = None
    fine_tune = None
    section = None
    phase_fields = ()

    @property
    def options(self):
        """The job's method section (`EKGConfig`, `L1PruneConfig`)."""
        return getattr(self.config, self.section)

    def export_from_checkpoint(self, workdir, *args, **kwargs):
        """Exports the fine-tuned net of the run in `workdir`."""
        return self.fine_tune(self.config).export_from_checkpoint(
            workdir, *args, **kwargs
        )

    def settings(self, ex, pretrained):
        """What the phase's result depends on (`result.json`'s
        `settings`; a rerun with others is refused)."""
        return {
            "pretrained": os.path.abspath(pretrained),
            "model": dataclasses.asdict(self.config.model),
            "dataset": ex.info.name,
            **{key: getattr(self.options, key) for key in self.phase_fields},
        }

    def load_pretrained(self, ex, pretrained, channel_config):
        """`(net, checkpoint read)`: the pretrained net, a `plain_net` of
        `channel_config` checked against `--pretrained`'s records."""
        logging.info("Loading the pretrained net from %s…", pretrained)
        net = experiment.plain_net(
            self.config, ex.info, channel_config, "pretrained"
        )
        _, _, trained = resolve(pretrained)
        check_config(pretrained, trained, self.config.model)
        return net, load(pretrained, net, self.config.model.name)

    def saved_result(self, ex, pretrained):
        """The phase's `result.json`, or None before the phase is done."""
        path = os.path.join(ex.workdir, self.phase_dir, "result.json")
        result = workdir_lib.read_json(path)
        if result is None:
            return None
        saved = result["settings"]
        for key, value in self.settings(ex, pretrained).items():
            if saved.get(key) != value:
                raise self.error(
                    f"--workdir={ex.workdir}: {self.phase_dir}/ was made "
                    f"with {key}={saved.get(key)}, this run has {value}; "
                    "use a new workdir"
                )
        return result

    def restore_phase(self, ex, **items):
        """Restores `items` (name -> trackable) from the phase's
        checkpoint (`experiment.restore_items`: one line if it cannot)."""
        experiment.restore_items(
            os.path.join(ex.workdir, self.phase_dir, "checkpoint"), items
        )

    def save_phase(self, ex, result, channel_config, config_path, **items):
        """Writes (the chief) the phase's checkpoint of `items`, the pruned
        `channel_config` to `config_path`, then `result.json`."""
        if not ex.is_chief:
            return
        phase_dir = os.path.join(ex.workdir, self.phase_dir)
        os.makedirs(phase_dir, exist_ok=True)
        tf.train.Checkpoint(**items).write(
            os.path.join(phase_dir, "checkpoint")
        )
        channel_config.save(config_path)  # atomic
        # Written last: its presence marks the phase as complete.
        io.atomic_write_json(os.path.join(phase_dir, "result.json"), result)
