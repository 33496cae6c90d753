"""Every absl flag of tfgraft's jobs, and their conversion to configs.

Flags are grouped; each entry point defines the groups it accepts
(`define("common", "grafting")`), so a flag that a job does not understand
is an error there. The library never sees flags: `job_config()` turns them
into the frozen dataclasses of `tfgraft.config`.
"""

import os
import re
import sys

from absl import app
from absl import flags

from tfgraft import config as cfg

FLAGS = flags.FLAGS

_GROUPS = {}


class _Common:
    def __init__(self):
        d = flags
        # === Run ===
        self.workdir = d.DEFINE_string(
            "workdir",
            None,
            "Run folder: checkpoints, summaries, report, export.",
        )
        self.epochs = d.DEFINE_integer("epochs", 200, "Training epochs.")
        self.max_steps = d.DEFINE_integer(
            "max_steps", 0, "Stop after this many steps (0: all epochs)."
        )
        self.seed = d.DEFINE_integer("seed", 0, "Base random seed.")
        self.strategy = d.DEFINE_enum(
            "strategy",
            "mirrored",
            list(cfg.STRATEGIES),
            "tf.distribute strategy.",
        )
        self.jit = d.DEFINE_bool(
            "jit", False, "XLA-compile the per-replica forward/backward."
        )
        self.accum_steps = d.DEFINE_integer(
            "accum_steps", 1, "Gradient-accumulation micro-batches per step."
        )
        self.precision = d.DEFINE_enum(
            "precision", "float32", list(cfg.PRECISIONS), "Dtype policy."
        )
        self.steps_per_loop = d.DEFINE_integer(
            "steps_per_loop",
            0,
            "Steps per tf.function call (0: min(epoch, 100)).",
        )
        self.checkpoint_every = d.DEFINE_integer(
            "checkpoint_every", 1, "Save a checkpoint every N epochs."
        )
        self.keep_checkpoints = d.DEFINE_integer(
            "keep_checkpoints", 3, "Checkpoints kept."
        )
        self.eval_every = d.DEFINE_integer(
            "eval_every", 1, "Evaluate every N epochs (and at the end)."
        )
        self.progress = d.DEFINE_bool(
            "progress", True, "tqdm progress bar per epoch."
        )
        self.deterministic = d.DEFINE_bool(
            "deterministic", False, "TF op determinism (slower)."
        )
        # === Data ===
        self.dataset = d.DEFINE_string(
            "dataset",
            "synthetic",
            "synthetic | tfds:<name> | folder:<path>.",
        )
        self.data_dir = d.DEFINE_string(
            "data_dir", None, "tensorflow-datasets data folder."
        )
        self.batch_size = d.DEFINE_integer(
            "batch_size", 128, "Global batch size per net."
        )
        self.eval_batch_size = d.DEFINE_integer(
            "eval_batch_size", 100, "Evaluation batch size."
        )
        self.synthetic_train_size = d.DEFINE_integer(
            "synthetic_train_size",
            10000,
            "Images in the synthetic train split.",
        )
        self.synthetic_test_size = d.DEFINE_integer(
            "synthetic_test_size", 2000, "Images in the synthetic test split."
        )
        self.augment = d.DEFINE_enum(
            "augment",
            "auto",
            ["auto", "cifar", "imagenet", "none"],
            "Augmentation recipe (auto: the dataset's).",
        )
        self.randaugment = d.DEFINE_bool(
            "randaugment", False, "keras-cv RandAugment."
        )
        self.mixup_alpha = d.DEFINE_float(
            "mixup_alpha", 0.0, "keras-cv MixUp alpha (0: off)."
        )
        self.cutmix_alpha = d.DEFINE_float(
            "cutmix_alpha", 0.0, "keras-cv CutMix alpha (0: off)."
        )
        # === Model ===
        self.model = d.DEFINE_string("model", "resnet20", "Model zoo name.")
        self.width_mult = d.DEFINE_float("width_mult", 1.0, "Width multiplier.")
        self.channel_config = d.DEFINE_string(
            "channel_config", None, "Per-layer widths (JSON file)."
        )
        self.preset = d.DEFINE_enum(
            "preset",
            None,
            ["grafting", "pff", "ekg", "dhp"],
            "Per-paper model preset (default: grafting).",
        )
        self.shortcut = d.DEFINE_enum(
            "shortcut", None, ["A", "projection"], "ResNet shortcut type."
        )
        # === Optimizer ===
        self.learning_rate = d.DEFINE_float(
            "learning_rate", 0.1, "Initial learning rate."
        )
        self.momentum = d.DEFINE_float("momentum", 0.9, "SGD momentum.")
        self.nesterov = d.DEFINE_bool("nesterov", False, "Nesterov momentum.")
        self.weight_decay = d.DEFINE_float(
            "weight_decay", 5e-4, "Coupled L2 weight decay."
        )
        self.schedule = d.DEFINE_enum(
            "schedule", "step", list(cfg.SCHEDULES), "LR schedule."
        )
        self.step_epochs = d.DEFINE_integer(
            "step_epochs", 60, "StepLR period in epochs."
        )
        self.gamma = d.DEFINE_float("gamma", 0.1, "LR decay factor.")
        self.milestones = d.DEFINE_list(
            "milestones", [], "MultiStepLR epochs (comma-separated)."
        )
        self.warmup_epochs = d.DEFINE_float(
            "warmup_epochs", 0.0, "Linear warm-up epochs."
        )


class _Grafting:
    def __init__(self):
        d = flags
        self.num_nets = d.DEFINE_integer("num_nets", 2, "Nets grafted (2-8).")
        self.criterion = d.DEFINE_string(
            "criterion", "entropy", "Grafting information: entropy | l1."
        )
        self.level = d.DEFINE_string(
            "level", "layer", "Grafting level: layer | filter."
        )
        self.graft_a = d.DEFINE_float(
            "graft_a", 0.4, "A of alpha = A/pi*arctan(c*dH) + 0.5."
        )
        self.graft_c = d.DEFINE_float(
            "graft_c", 500.0, "c of the same formula."
        )
        self.graft_every = d.DEFINE_string(
            "graft_every", "epoch", "'epoch' or a number of steps."
        )
        self.difflr = d.DEFINE_bool(
            "difflr",
            False,
            "Different initial LRs lr*(1+cos(pi*(N-i)/N))/2 (paper's dlr).",
        )
        self.cos = d.DEFINE_bool(
            "cos",
            False,
            "Per-step cosine annealing (same as --schedule=cosine).",
        )


_GROUP_TYPES = {"common": _Common, "grafting": _Grafting}


def define(*names):
    """Defines the named flag groups once; returns them in order."""
    out = []
    for name in names:
        if name not in _GROUPS:
            _GROUPS[name] = _GROUP_TYPES[name]()
        out.append(_GROUPS[name])
    return out if len(out) > 1 else out[0]


def _int_or_epoch(flag, value):
    if value == "epoch":
        return 0
    try:
        steps = int(value)
    except ValueError:
        raise cfg.ConfigError(
            f"--{flag}={value}: must be 'epoch' or a positive integer"
        ) from None
    if steps <= 0:
        raise cfg.ConfigError(f"--{flag}={value}: must be > 0")
    return steps


def job_config():
    """Builds the `JobConfig` the defined flags describe."""
    c = _GROUPS["common"]
    milestones = []
    for m in c.milestones.value:
        try:
            milestones.append(float(m))
        except ValueError:
            raise cfg.ConfigError(
                f"--milestones={','.join(c.milestones.value)}: "
                "must be numbers of epochs"
            ) from None
    graft = None
    schedule = c.schedule.value
    if "grafting" in _GROUPS:
        g = _GROUPS["grafting"]
        if g.cos.value:
            schedule = "cosine"
        graft = cfg.GraftConfig(
            num_nets=g.num_nets.value,
            criterion=g.criterion.value,
            level=g.level.value,
            a=g.graft_a.value,
            c=g.graft_c.value,
            graft_every=_int_or_epoch("graft_every", g.graft_every.value),
            difflr=g.difflr.value,
        )
    return cfg.JobConfig(
        data=cfg.DataConfig(
            dataset=c.dataset.value,
            data_dir=c.data_dir.value,
            batch_size=c.batch_size.value,
            eval_batch_size=c.eval_batch_size.value,
            synthetic_train_size=c.synthetic_train_size.value,
            synthetic_test_size=c.synthetic_test_size.value,
            augment=c.augment.value,
            randaugment=c.randaugment.value,
            mixup_alpha=c.mixup_alpha.value,
            cutmix_alpha=c.cutmix_alpha.value,
        ),
        model=cfg.ModelConfig(
            name=c.model.value,
            width_mult=c.width_mult.value,
            channel_config=c.channel_config.value,
            preset=c.preset.value,
            shortcut=c.shortcut.value,
        ),
        optim=cfg.OptimConfig(
            learning_rate=c.learning_rate.value,
            momentum=c.momentum.value,
            nesterov=c.nesterov.value,
            weight_decay=c.weight_decay.value,
            schedule=schedule,
            step_epochs=c.step_epochs.value,
            gamma=c.gamma.value,
            milestones=tuple(milestones),
            warmup_epochs=c.warmup_epochs.value,
        ),
        run=cfg.RunConfig(
            epochs=c.epochs.value,
            max_steps=c.max_steps.value,
            seed=c.seed.value,
            strategy=c.strategy.value,
            jit=c.jit.value,
            accum_steps=c.accum_steps.value,
            precision=c.precision.value,
            steps_per_loop=c.steps_per_loop.value,
            checkpoint_every=c.checkpoint_every.value,
            keep_checkpoints=c.keep_checkpoints.value,
            eval_every=c.eval_every.value,
            progress=c.progress.value,
            deterministic=c.deterministic.value,
        ),
        graft=graft,
    )


def flags_text():
    """The resolved tfgraft flags as flagfile text (a valid flagfile)."""
    lines = ["# Resolved flags of this run; reusable as --flagfile."]
    for flag in FLAGS.get_flags_for_module(__name__):
        if flag.value is None:
            continue
        serialized = flag.serialize()
        if serialized:
            lines.append(serialized)
    return "\n".join(lines) + "\n"


_FLAGFILE = re.compile(r"^--flagfile=(.+)$")


def check_flagfiles(argv):
    """Rejects flagfile lines that absl would silently misread.

    absl keeps a trailing `# comment` as part of the value (a string flag
    becomes 'x  # comment'), so such lines are an error here, naming the
    file and line. Nested `--flagfile=` lines are followed (paths resolve
    against the current directory, as absl does).
    """
    pending = [a.split("=", 1)[1] for a in argv if a.startswith("--flagfile=")]
    seen = set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        if not os.path.isfile(path):
            raise cfg.ConfigError(f"--flagfile={path}: no such file")
        with open(path) as f:
            for number, line in enumerate(f, 1):
                text = line.strip()
                if not text or text.startswith(("#", "//")):
                    continue
                nested = _FLAGFILE.match(text)
                if nested:
                    pending.append(nested.group(1))
                    continue
                if re.search(r"\s#", text):
                    raise cfg.ConfigError(
                        f"{path}:{number}: trailing comment in '{text}'; "
                        "put comments on their own '#' line"
                    )


def user_errors():
    """Exception types reported as one line (no traceback) by `run`."""
    from tfgraft import data
    from tfgraft import export
    from tfgraft import models
    from tfgraft.training import loop

    return (
        cfg.ConfigError,
        data.DataError,
        models.ChannelConfigError,
        models.UnknownModelError,
        export.ExportError,
        loop.CheckpointError,
        FileExistsError,
        PermissionError,
        flags.IllegalFlagValueError,
    )


def run(main):
    """`app.run(main)` with flagfile checks and one-line user errors."""
    try:
        check_flagfiles(sys.argv)
    except cfg.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)

    def guarded(argv):
        try:
            return main(argv)
        except user_errors() as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    app.run(guarded)
