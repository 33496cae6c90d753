"""One training run: a `Method` run by an `Experiment` in its workdir.

An `Experiment` does what every method shares (strategy, data,
optimizers, the fit loop, the best net, the report, the export); a
`Method` (the baseline itself) overrides what it adds; a `Pipeline` (EKG,
L1 pruning, LW-DNA) calls `Experiment.train` or `Experiment.sub_run` for
each training phase.

Every job (`train.flags.JOBS`) is a class made from the `JobConfig` (it
checks its section once, there) with `name`, `config`, `num_nets`,
`run(workdir, ...)` and `export_from_checkpoint(workdir, ...)`.

A run writes into its workdir the files of README.md's "Jobs and the
workdir contract" (`flags.cfg`, `config.json` and `job.json` describe the
first start and are never rewritten: a resume must agree with them, see
`tfgraft.training.workdir`), each to a temporary path renamed into place.
"""

import contextlib
import dataclasses
import json
import math
import os
import statistics
import time

import keras
import tensorflow as tf
from absl import logging

from tfgraft import data as data_lib
from tfgraft import errors
from tfgraft import export as export_lib
from tfgraft import io
from tfgraft import models
from tfgraft.config import ConfigError
from tfgraft.config import JobConfig
from tfgraft.training import console as console_lib
from tfgraft.training import distribute
from tfgraft.training import loop
from tfgraft.training import optimizers as optimizers_lib
from tfgraft.training import schedules
from tfgraft.training import trainer as trainer_lib
from tfgraft.training import workdir as workdir_lib


def count_params(net):
    """Trainable parameters (PyTorch's `numel` over `parameters()`)."""
    return int(sum(math.prod(w.shape) for w in net.trainable_weights))


def steady_images_per_sec(history, batch_size):
    """Per-net training images/s of `history` without each session's first
    loop (which traces the step), or None when nothing else was timed.

    Args:
        history: `loop.fit`'s per-epoch logs (`step`, `seconds`, and
            `first_loop` = `{"steps", "seconds"}` in the epoch where a
            session started).
        batch_size: global batch size (images per step and net).
    """
    steps = seconds = 0.0
    previous = 0
    for h in history:
        steps += h["step"] - previous
        seconds += h["seconds"]
        previous = h["step"]
        first = h.get("first_loop")
        if first:
            steps -= first["steps"]
            seconds -= first["seconds"]
    if steps <= 0 or seconds <= 0:
        return None
    return steps * batch_size / seconds


def net_seed(base_seed, index):
    """Initialisation seed of net `index` (different for every net)."""
    return base_seed * 1000 + index


def data_seed(base_seed, index):
    """Data-stream seed of net `index` (own shuffle and augmentation)."""
    return base_seed * 1000 + 500 + index


class BestNetTracker(loop.Hook):
    """Keeps a copy of the best-test-accuracy net (before any graft).

    The copy is a second model of the same architecture living in the
    strategy, checkpointed with the run, so `export/best/` survives resume.
    """

    def __init__(self, trainer, best_net):
        self.trainer = trainer
        self.best_net = best_net
        self.best = tf.Variable(-1.0, trainable=False, name="best_top1")
        self.best_index = tf.Variable(-1, trainable=False, name="best_net")
        self.best_epoch = tf.Variable(-1, trainable=False, name="best_epoch")

    def on_epoch_end(self, epoch, logs, last):
        if "test" not in logs:
            return
        accs = [r["top1"] for r in logs["test"]["nets"]]
        i = max(range(len(accs)), key=accs.__getitem__)
        if accs[i] > float(self.best.numpy()):
            for dst, src in zip(
                self.best_net.weights, self.trainer.nets[i].weights
            ):
                dst.assign(src)
            self.best.assign(accs[i])
            self.best_index.assign(i)
            self.best_epoch.assign(epoch + 1)

    def checkpoint_items(self):
        return {
            "best_net": self.best_net,
            "best_top1": self.best,
            "best_index": self.best_index,
            "best_epoch": self.best_epoch,
        }


def model_kwargs(model, info, preset=None):
    """`models.build_model`'s keywords that a run's data and model fix.

    Args:
        model: the run's `ModelConfig`.
        info: the data's `DatasetInfo`.
        preset: overrides `model.preset` (LW-DNA's default `dhp`).
    """
    return dict(
        num_classes=info.num_classes,
        input_shape=info.image_shape,
        mean=info.mean,
        std=info.std,
        preset=preset or model.preset,
        shortcut=model.shortcut,
    )


def plain_net(config, info, channel_config, name, index=0, **options):
    """A zoo net of `config.model` with the widths of `channel_config` as
    given and net `index`'s initialisation seed; without `options` (more
    `models.build_model` keywords), plain convs and net 0's seed (a
    pruning method's pretrained, pruned or compact net)."""
    keras.utils.set_random_seed(net_seed(config.run.seed, index))
    return models.build_model(
        config.model.name,
        channel_config=channel_config,
        model_name=name,
        **model_kwargs(config.model, info),
        **options,
    )


def restore_items(path, items):
    """Restores `items` (name -> trackable) from checkpoint `path`.

    `path` may come from `CheckpointManager.save` or `Checkpoint.write`
    (`read` restores the items only, not a save counter). A checkpoint that
    lacks one of them or cannot be read is a one-line `CheckpointError`
    naming it.
    """
    try:
        status = tf.train.Checkpoint(**items).read(path)
        status.expect_partial()
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as e:
        raise loop.CheckpointError(
            f"{path}: cannot restore {', '.join(items)} ({io.first_line(e)})"
        ) from None


def job_config(config, job, field, kind, preset=None):
    """`config` checked for a job: a `ValueError` unless its section
    `field` (a `kind`) is set; with `preset`, that preset where the model
    names none (config.json records it)."""
    if getattr(config, field) is None:
        raise ValueError(f"{job} needs config.{field} ({kind})")
    if preset is not None and config.model.preset is None:
        model = dataclasses.replace(config.model, preset=preset)
        config = dataclasses.replace(config, model=model)
    return config


def accuracy_summary(history, index):
    """Net `index`'s `final_top1`, `final_top5`, `best_top1` and
    `best_epoch` over the evaluations in `history` (None without any)."""
    evals = [h["test"]["nets"][index] for h in history if "test" in h]
    if not evals:
        keys = ("final_top1", "final_top5", "best_top1", "best_epoch")
        return dict.fromkeys(keys)
    epochs = [h["epoch"] for h in history if "test" in h]
    accs = [e["top1"] for e in evals]
    best = max(range(len(accs)), key=accs.__getitem__)
    return {
        "final_top1": accs[-1],
        "final_top5": evals[-1]["top5"],
        "best_top1": accs[best],
        "best_epoch": epochs[best],
    }


class Method:
    """What a method adds to a training run; this one is the baseline.

    A method overrides what it changes and nothing else; the `Experiment`
    that runs it calls these hooks (`ex` is that experiment).

    Args:
        config: the resolved `JobConfig`; a method checks its own section
            here, once.
    """

    name = "baseline"
    # The conv factory of the nets (None: the zoo's plain convs); see
    # `models.build_model`.
    conv_layer = None

    def __init__(self, config: JobConfig):
        self.config = config
        self.num_nets = 1

    def lr_scales(self):
        """Each net's factor on the learning-rate schedule."""
        return [1.0] * self.num_nets

    def channel_config(self, ex):
        """The nets' `ChannelConfig`, or None: the config's model (its
        `channel_config` file, if any, scaled by `width_mult`)."""
        del ex
        return None

    def init_net(self, net, index):
        """Adjusts net `index` after it is built (weights, trainability)."""
        del net, index

    def make_trainer(self, nets, optimizers, strategy, **options):
        """The trainer; `options` are the run's (`Experiment.build`)."""
        return trainer_lib.Trainer(nets, optimizers, strategy, **options)

    def train_dataset(self, ex, index, start_step):
        """Net `index`'s training data from step `start_step` on."""
        ds = data_lib.train_dataset(
            ex.source,
            batch_size=self.config.data.batch_size,
            seed=data_seed(self.config.run.seed, index),
            start_step=start_step,
            augment=self.config.data,
        )
        return distribute.shard_by_data(ds)

    def keeps_best(self):
        """Whether the run keeps a copy of its best-test net."""
        return self.num_nets > 1

    def hooks(self, ex, trainer):
        """The fit loop's `loop.Hook`s of this method."""
        del ex, trainer
        return []

    def after_fit(self, ex, trainer, history):
        """Runs after training, before the report (counted in its time)."""
        del ex, trainer, history

    def report_extras(self, ex, trainer, history):
        """`report.json` entries of this method."""
        del ex, trainer, history
        return {}

    def export(self, ex, trainer):
        """Writes the SavedModels: `export/` (one net), else
        `export/net_<i>/` and `export/best/`."""
        export_dir = os.path.join(ex.workdir, "export")
        if trainer.num_nets == 1:
            ex.save_models({export_dir: trainer.nets[0]})
            return
        exports = {
            os.path.join(export_dir, f"net_{i}"): net
            for i, net in enumerate(trainer.nets)
        }
        best = ex.best_tracker
        if best is not None and best.best_epoch > 0:
            exports[os.path.join(export_dir, "best")] = best.best_net
        ex.save_models(exports)

    def exported_net(self, ex, net_index):
        """What `export` writes for net `net_index`, from the newest
        checkpoint (`train.export`)."""
        return ex.net_from_checkpoint(net_index)

    # === The job protocol (`train.flags.JOBS`) ===

    def run(self, workdir, **kwargs):
        """Trains this method in `workdir`; returns the report dict.

        Args:
            workdir: the run folder.
            **kwargs: `Experiment` keyword arguments.
        """
        return Experiment(self, workdir, **kwargs).run()

    def export_from_checkpoint(
        self, workdir, net_index, export_dir, overwrite=False
    ):
        """Exports what the run in `workdir` exports (`exported_net`), from
        its newest checkpoint; needs no data, only the run's records."""
        net = self.exported_net(Experiment(self, workdir), net_index)
        return export_lib.export_saved_model(
            net, export_dir, overwrite=overwrite
        )


class Pipeline(Method):
    """A job of several phases in one workdir (EKG, L1 pruning, LW-DNA).

    `run` opens the workdir's `Experiment` (then `experiment`) and runs
    `phases` in it.
    """

    def run(self, workdir, **kwargs):
        ex = self.experiment = Experiment(self, workdir, **kwargs)
        with ex.opened():
            return self.phases(ex)

    def phases(self, ex):
        """Runs the job in the opened experiment `ex`; returns the report."""
        raise NotImplementedError


class Experiment:
    """Runs one method in one workdir (Orbit's Controller to its trainer).

    Args:
        method: the `Method` to train; a pipeline that trains only in
            sub-runs passes itself (its `name`, `config` and `num_nets`
            head the workdir and the console).
        workdir: the run folder (created if needed).
        flags_text: the resolved flags as flagfile text, written to
            `flags.cfg` (entry points pass it; library users may not).
        strategy: a ready strategy (tests pass logical-CPU mirrored ones);
            default: the one `config.run.strategy` names.
        force_resume: resume a workdir whose recorded run differs in
            "recipe" fields (learning rate, augmentation...; see
            `tfgraft.training.workdir`); the override is recorded.
    """

    def __init__(
        self,
        method,
        workdir,
        *,
        flags_text=None,
        strategy=None,
        force_resume=False,
    ):
        self.method = method
        self.config = method.config
        self.workdir = os.path.abspath(workdir)
        self.flags_text = flags_text
        self._strategy = strategy
        self.force_resume = force_resume
        self.workdir_lock = None
        self.best_tracker = None
        # Replaced in `setup` by the chief's (other workers show nothing).
        self.console = console_lib.Console(enabled=False)
        # `{name: seconds}` of the SavedModels `save_models` wrote.
        self.export_seconds = {}

    def run(self):
        """Trains, evaluates, exports and reports; returns the report dict."""
        with self.opened():
            return self.train()

    @contextlib.contextmanager
    def opened(self):
        """Sets up, locks the workdir, loads the data, prints the header;
        releases the lock at the end, however it ends."""
        try:
            self.setup()
            self.load_data()
            self.console.header(self.header())
            yield self
        finally:
            self.release_workdir()

    def setup(self):
        """Precision, determinism, strategy; locks and checks the workdir.

        Before anything is written, the workdir is locked and the config
        compared with its records (`tfgraft.training.workdir.start`).
        The run's wall time starts here (`t0`).
        """
        self.t0 = time.perf_counter()
        r = self.config.run
        distribute.set_precision(r.precision)
        if r.deterministic:
            tf.config.experimental.enable_op_determinism()
        self.strategy = self._strategy or distribute.make_strategy(r.strategy)
        # Only the chief writes the workdir (multi-worker runs: the others
        # train along and save their checkpoints into a scratch folder).
        self.is_chief = distribute.is_chief(self.strategy)
        self.console = console_lib.Console(
            enabled=self.is_chief, live=r.progress
        )
        self.check_widths()
        if self.is_chief:
            try:
                os.makedirs(self.workdir, exist_ok=True)
            except OSError as e:
                # E.g. a parent that is a file or read-only: one line.
                raise ConfigError(
                    f"--workdir={self.workdir}: cannot create it "
                    f"({e.strerror or type(e).__name__})"
                ) from None
            if not os.access(self.workdir, os.W_OK):
                raise PermissionError(
                    f"--workdir={self.workdir} is not writable"
                )
        per_step = self.strategy.num_replicas_in_sync * r.accum_steps
        if self.config.data.batch_size % per_step:
            # Checked here (the trainer checks again) so that nothing of
            # the run is written before the one-line error.
            raise ConfigError(
                f"--batch_size={self.config.data.batch_size}: must be "
                f"divisible by replicas "
                f"({self.strategy.num_replicas_in_sync}) x --accum_steps "
                f"({r.accum_steps})"
            )
        if self.is_chief:
            # One writer per workdir, and nothing written before the config
            # is compared with the workdir's record (which stays the first).
            self.workdir_lock = workdir_lib.WorkdirLock(self.workdir).acquire()
            try:
                workdir_lib.start(
                    self.workdir,
                    dataclasses.asdict(self.config),
                    self.method.name,
                    flags_text=self.flags_text,
                    force_resume=self.force_resume,
                )
            except BaseException:
                self.release_workdir()
                raise
        logging.debug(
            "Config: %s", io.dumps_json(dataclasses.asdict(self.config))
        )

    def check_widths(self):
        """Stops when `width_mult` empties a layer; warns below 4 channels.

        `ChannelConfig.scaled` keeps every layer >= 1 channel, which would
        silently train another network than the one asked for.
        """
        m = self.config.model
        if m.width_mult == 1.0:
            return
        base = models.model_channel_config(m, scaled=False)
        widths = base.rounded_widths(m.width_mult)
        empty = [slot for slot, width in widths.items() if width < 1]
        if empty:
            narrowest = min(base.widths.values())
            raise ConfigError(
                f"--width_mult={m.width_mult}: leaves {len(empty)} of "
                f"{m.name}'s {len(widths)} layer widths with 0 channels "
                f"(e.g. {empty[0]}: {base.widths[empty[0]]} x "
                f"{m.width_mult}); every layer needs >= 1 channel, so "
                f"--width_mult must be >= {0.5 / narrowest:.4g} here"
            )
        narrow = [slot for slot, width in widths.items() if width < 4]
        if narrow:
            logging.warning(
                "--width_mult=%s leaves %d layer width(s) below 4 channels "
                "(%s: %d)",
                m.width_mult,
                len(narrow),
                narrow[0],
                widths[narrow[0]],
            )

    def release_workdir(self):
        """Releases the workdir lock `setup` took (`opened` does it)."""
        if self.workdir_lock is not None:
            self.workdir_lock.release()
            self.workdir_lock = None

    def load_data(self):
        d = self.config.data
        logging.debug("Loading data %s…", d.dataset)
        self.source = data_lib.source_for(d, self.config.run.seed)
        self.info = self.source.info
        if self.is_chief:
            io.atomic_write_json(
                os.path.join(self.workdir, "data_info.json"),
                dataclasses.asdict(self.info),
            )
        self.steps_per_epoch = data_lib.steps_per_epoch(
            self.source, d.batch_size
        )

    def header(self):
        """The console's first line: job, model, data, nets, schedule,
        device and workdir (after `setup` and `load_data`)."""
        m = self.config.model
        model = m.name
        if m.width_mult != 1.0:
            model += f" x{m.width_mult:g}"
        if m.channel_config:
            model += f" ({os.path.basename(m.channel_config)})"
        n = self.method.num_nets
        info = self.info
        shape = "x".join(str(d) for d in info.image_shape)
        return [
            self.method.name,
            f"{model}, {n} net{'s' if n > 1 else ''}",
            f"data {info.name}: {info.num_train} train, "
            f"{info.num_test} test, {info.num_classes} classes, "
            f"{shape}",
            f"{self.config.run.epochs} epochs x {self.steps_per_epoch} "
            f"steps, batch {self.config.data.batch_size}",
            distribute.describe(self.strategy),
            f"workdir {self.workdir}",
        ]

    def build_net(self, index, info):
        """Builds net `index` of the method with its own seed."""
        m = self.config.model
        channel_config = self.method.channel_config(self)
        width_mult = m.width_mult
        if channel_config is not None:
            width_mult = 1.0  # the method's widths are final
        elif m.channel_config:
            channel_config = models.ChannelConfig.load(m.channel_config)
        net = plain_net(
            self.config,
            info,
            channel_config,
            f"net_{index}",
            index,
            width_mult=width_mult,
            conv_layer=self.method.conv_layer,
        )
        self.method.init_net(net, index)
        return net

    def build(self):
        """Nets, optimizers and trainer, inside the strategy scope."""
        o, r = self.config.optim, self.config.run
        n = self.method.num_nets
        logging.debug("Building %d net(s) %s…", n, self.config.model.name)
        schedule = schedules.make_schedule(
            o, self.steps_per_epoch, r.epochs * self.steps_per_epoch
        )
        template = optimizers_lib.TorchSGD(
            schedule,
            momentum=o.momentum,
            nesterov=o.nesterov,
            weight_decay=o.weight_decay,
        )
        with self.strategy.scope():
            nets = [self.build_net(i, self.info) for i in range(n)]
            opts = optimizers_lib.per_net(
                template,
                self.method.lr_scales(),
                loss_scale=r.precision == "mixed_float16",
            )
            self.trainer = self.method.make_trainer(
                nets,
                opts,
                self.strategy,
                global_batch_size=self.config.data.batch_size,
                jit=distribute.resolve_jit(r.jit, self.strategy),
                accum_steps=r.accum_steps,
                concurrent_nets=r.concurrent_nets,
                on_nan=r.on_nan,
            )
        return self.trainer

    def make_iterators(self, start_step):
        return [
            iter(
                self.strategy.experimental_distribute_dataset(
                    self.method.train_dataset(self, i, start_step)
                )
            )
            for i in range(self.trainer.num_nets)
        ]

    def train(self, method=None):
        """Trains the method in the opened workdir; returns the report.

        Builds, fits, lets the method finish (`after_fit`), reports and
        exports.

        Args:
            method: the `Method` to train in place of the one the
                experiment was made with (a pipeline's training phase).
        """
        if method is not None:
            self.method = method
        trainer = self.build()
        self.eval_dataset = self.test_dataset()
        hooks = list(self.method.hooks(self, trainer))
        if self.method.keeps_best():
            with self.strategy.scope():
                best_net = self.build_net(0, self.info)
            self.best_tracker = BestNetTracker(trainer, best_net)
            hooks.insert(0, self.best_tracker)
        history = loop.fit(
            trainer,
            make_iterators=self.make_iterators,
            eval_dataset=self.eval_dataset,
            run=self.config.run,
            steps_per_epoch=self.steps_per_epoch,
            workdir=self.workdir,
            hooks=hooks,
            is_chief=self.is_chief,
            examples_per_step=self.config.data.batch_size,
            console=self.console,
        )
        self.method.after_fit(self, trainer, history)
        report = self.make_report(
            trainer, history, time.perf_counter() - self.t0
        )
        if self.is_chief:
            self.method.export(self, trainer)
            report["export_seconds"] = self.export_seconds
        self.write_report(report)
        # Multi-worker runs: no worker leaves before the chief has written.
        distribute.sync_workers(self.strategy)
        return report

    # === Outputs ===

    def test_dataset(self):
        """The test split in batches of `--eval_batch_size`."""
        with errors.flag_names(batch_size="eval_batch_size"):
            return data_lib.eval_dataset(
                self.source, batch_size=self.config.data.eval_batch_size
            )

    def sub_run(self, method, name):
        """Runs `method` in `<workdir>/<name>` as a run of its own, with
        this run's strategy and `force_resume`; returns its report."""
        return method.run(
            os.path.join(self.workdir, name),
            strategy=self.strategy,
            force_resume=self.force_resume,
        )

    def write_report(self, report):
        """Writes `report.json` (the chief) and the console's last line:
        the run's seconds and the report's path."""
        path = os.path.join(self.workdir, "report.json")
        if self.is_chief:
            io.atomic_write_json(path, report)
        seconds = time.perf_counter() - self.t0
        self.console.line(
            f"done in {console_lib.fmt_seconds(seconds)}; report: {path}"
        )

    def save_models(self, exports):
        """Exports `{path: net}` as SavedModels, shown one at a time."""
        names = {
            os.path.relpath(path, self.workdir): (path, net)
            for path, net in exports.items()
        }
        # One exporter: nets of one architecture share its traced graphs.
        exporter = export_lib.Exporter()
        for name in self.console.tasks("SavedModel", names):
            path, net = names[name]
            exporter.export(net, path, overwrite=True)
            self.export_seconds[name] = exporter.seconds[path]

    def net_from_checkpoint(self, net_index, key=None):
        """Net `net_index` with the weights of the newest checkpoint.

        `key` is its name in the checkpoint (default `net_<index>`).
        """
        with open(os.path.join(self.workdir, "data_info.json")) as f:
            info = data_lib.DatasetInfo(**json.load(f))
        self.info = info
        n = self.method.num_nets
        if not 0 <= net_index < n:
            raise ConfigError(
                f"--net={net_index}: this run has {n} net(s) (0..{n - 1})"
            )
        distribute.set_precision(self.config.run.precision)
        net = self.build_net(net_index, info)
        path = self.latest_checkpoint()
        restore_items(path, {key or f"net_{net_index}": net})
        return net

    def latest_checkpoint(self):
        """The newest checkpoint of the workdir (`CheckpointError` if none)."""
        ckpt_dir = os.path.join(self.workdir, "checkpoints")
        path = tf.train.latest_checkpoint(ckpt_dir)
        if path is None:
            raise loop.CheckpointError(f"no checkpoint in {ckpt_dir}")
        return path

    def make_report(self, trainer, history, seconds):
        from tfgraft import complexity

        evals = [h for h in history if "test" in h]
        nets = [
            {
                **accuracy_summary(history, i),
                "params": count_params(net),
                "flops": int(complexity.count(net, "macs").flops),
            }
            for i, net in enumerate(trainer.nets)
        ]
        train_seconds = sum(h["seconds"] for h in history)
        steps = history[-1]["step"] if history else 0
        per_net_ips = (
            steps * self.config.data.batch_size / max(train_seconds, 1e-9)
        )
        steady = steady_images_per_sec(history, self.config.data.batch_size)
        for entry in nets:
            # All nets train in the same steps, so they share these figures.
            entry["epochs"] = len(history)
            entry["wall_seconds"] = seconds
            entry["train_images_per_sec"] = per_net_ips
            entry["steady_images_per_sec"] = steady
        report = {
            "job": self.method.name,
            "model": self.config.model.name,
            "dataset": self.info.name,
            "num_nets": trainer.num_nets,
            "epochs": len(history),
            "steps": int(trainer.global_step.numpy()),
            "wall_seconds": seconds,
            "train_seconds": train_seconds,
            "train_images_per_sec": (
                steps
                * self.config.data.batch_size
                * trainer.num_nets
                / max(train_seconds, 1e-9)
            ),
            "steady_images_per_sec": (
                None if steady is None else steady * trainer.num_nets
            ),
            "first_loop_seconds": [
                h["first_loop"]["seconds"] for h in history if "first_loop" in h
            ],
            "flops_convention": "macs",
            "nets": nets,
        }
        # Forward-only speed in the unit of train_images_per_sec (images x
        # nets per second): the median of the evaluations after the first,
        # which traces its function and is reported alone.
        rates = [
            h["eval_images_per_sec"] * trainer.num_nets
            for h in evals
            if "eval_images_per_sec" in h
        ]
        report["eval_images_per_sec"] = (
            statistics.median(rates[1:] or rates) if rates else None
        )
        report["eval_images_per_sec_first"] = rates[0] if rates else None
        if trainer.num_nets > 1 and evals:
            ens = [h["test"]["ensemble"]["top1"] for h in evals]
            report["ensemble"] = {"final_top1": ens[-1], "best_top1": max(ens)}
        if self.best_tracker is not None and trainer.num_nets > 1:
            report["best"] = {
                "net": int(self.best_tracker.best_index.numpy()),
                "epoch": int(self.best_tracker.best_epoch.numpy()),
                "top1": float(self.best_tracker.best.numpy()),
            }
        report.update(self.method.report_extras(self, trainer, history))
        return report
