"""Frozen run configurations, built by `train/flags.py` and read by jobs.

The library never reads absl flags: every job takes these dataclasses, so a
user can drive tfgraft from Python exactly as the command line does.
"""

import dataclasses
from typing import Optional
from typing import Tuple


class ConfigError(ValueError):
    """A configuration value is out of range; the message names the flag."""


def _check(condition, flag, value, requirement):
    if not condition:
        raise ConfigError(f"--{flag}={value}: {requirement}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which images, how they are batched and augmented."""

    dataset: str = "synthetic"
    data_dir: Optional[str] = None
    batch_size: int = 128
    eval_batch_size: int = 100
    synthetic_train_size: int = 10000
    synthetic_test_size: int = 2000
    augment: str = "auto"
    randaugment: bool = False
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0

    def __post_init__(self):
        _check(
            self.batch_size > 0, "batch_size", self.batch_size, "must be > 0"
        )
        _check(
            self.eval_batch_size > 0,
            "eval_batch_size",
            self.eval_batch_size,
            "must be > 0",
        )
        _check(
            self.augment in ("auto", "cifar", "imagenet", "none"),
            "augment",
            self.augment,
            "must be one of auto, cifar, imagenet, none",
        )
        _check(
            self.mixup_alpha >= 0,
            "mixup_alpha",
            self.mixup_alpha,
            "must be >= 0",
        )
        _check(
            self.cutmix_alpha >= 0,
            "cutmix_alpha",
            self.cutmix_alpha,
            "must be >= 0",
        )


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which network, at which widths, with which per-paper preset."""

    name: str = "resnet20"
    width_mult: float = 1.0
    channel_config: Optional[str] = None
    preset: Optional[str] = None
    shortcut: Optional[str] = None

    def __post_init__(self):
        _check(
            self.width_mult > 0, "width_mult", self.width_mult, "must be > 0"
        )


SCHEDULES = ("constant", "step", "multistep", "cosine")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """PyTorch-style SGD with coupled weight decay and an LR schedule.

    `step_epochs`/`milestones` are in epochs (PyTorch StepLR/MultiStepLR
    stepped per epoch); `cosine` anneals per step to 0 at the last step.
    """

    learning_rate: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "step"
    step_epochs: int = 60
    gamma: float = 0.1
    milestones: Tuple[float, ...] = ()
    warmup_epochs: float = 0.0

    def __post_init__(self):
        _check(
            self.learning_rate > 0,
            "learning_rate",
            self.learning_rate,
            "must be > 0",
        )
        _check(
            0 <= self.momentum < 1,
            "momentum",
            self.momentum,
            "must be in [0, 1)",
        )
        _check(
            self.weight_decay >= 0,
            "weight_decay",
            self.weight_decay,
            "must be >= 0",
        )
        _check(
            self.schedule in SCHEDULES,
            "schedule",
            self.schedule,
            f"must be one of {', '.join(SCHEDULES)}",
        )
        _check(
            self.step_epochs > 0, "step_epochs", self.step_epochs, "must be > 0"
        )
        _check(0 < self.gamma <= 1, "gamma", self.gamma, "must be in (0, 1]")
        _check(
            list(self.milestones) == sorted(self.milestones),
            "milestones",
            ",".join(map(str, self.milestones)),
            "must be increasing",
        )
        _check(
            self.warmup_epochs >= 0,
            "warmup_epochs",
            self.warmup_epochs,
            "must be >= 0",
        )


STRATEGIES = ("mirrored", "one_device", "multi_worker", "tpu", "default")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """How long, on what hardware and how often to checkpoint and evaluate."""

    epochs: int = 200
    max_steps: int = 0
    seed: int = 0
    strategy: str = "mirrored"
    jit: bool = False
    accum_steps: int = 1
    precision: str = "float32"
    steps_per_loop: int = 0
    checkpoint_every: int = 1
    keep_checkpoints: int = 3
    eval_every: int = 1
    progress: bool = True
    deterministic: bool = False

    def __post_init__(self):
        _check(self.epochs > 0, "epochs", self.epochs, "must be > 0")
        _check(self.max_steps >= 0, "max_steps", self.max_steps, "must be >= 0")
        _check(
            self.strategy in STRATEGIES,
            "strategy",
            self.strategy,
            f"must be one of {', '.join(STRATEGIES)}",
        )
        _check(
            self.accum_steps >= 1,
            "accum_steps",
            self.accum_steps,
            "must be >= 1",
        )
        _check(
            self.precision in PRECISIONS,
            "precision",
            self.precision,
            f"must be one of {', '.join(PRECISIONS)}",
        )
        _check(
            self.steps_per_loop >= 0,
            "steps_per_loop",
            self.steps_per_loop,
            "must be >= 0 (0 = automatic)",
        )
        _check(
            self.checkpoint_every >= 1,
            "checkpoint_every",
            self.checkpoint_every,
            "must be >= 1",
        )
        _check(
            self.keep_checkpoints >= 1,
            "keep_checkpoints",
            self.keep_checkpoints,
            "must be >= 1",
        )
        _check(
            self.eval_every >= 1, "eval_every", self.eval_every, "must be >= 1"
        )


CRITERIA = ("entropy", "l1")
LEVELS = ("layer", "filter")


@dataclasses.dataclass(frozen=True)
class GraftConfig:
    """Filter Grafting options (METHODS.md §1).

    `graft_every` is 0 for "once per epoch" (the paper) or a step count.
    `difflr` gives net i the initial LR lr*(1 + cos(pi*(N-i)/N))/2 (the
    paper's meaning; the reference code's flag is inverted).
    """

    num_nets: int = 2
    criterion: str = "entropy"
    level: str = "layer"
    a: float = 0.4
    c: float = 500.0
    graft_every: int = 0
    difflr: bool = False

    def __post_init__(self):
        _check(
            2 <= self.num_nets <= 8,
            "num_nets",
            self.num_nets,
            "grafting needs 2 to 8 nets",
        )
        _check(
            self.criterion in CRITERIA,
            "criterion",
            self.criterion,
            f"must be one of {', '.join(CRITERIA)}",
        )
        _check(
            self.level in LEVELS,
            "level",
            self.level,
            f"must be one of {', '.join(LEVELS)}",
        )
        _check(0 <= self.a <= 1, "graft_a", self.a, "must be in [0, 1]")
        _check(self.c > 0, "graft_c", self.c, "must be > 0")
        _check(
            self.graft_every >= 0,
            "graft_every",
            self.graft_every,
            "must be 'epoch' or a positive number of steps",
        )


@dataclasses.dataclass(frozen=True)
class JobConfig:
    """Everything one training job needs."""

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    run: RunConfig = RunConfig()
    graft: Optional[GraftConfig] = None

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        """Inverse of `to_dict` (e.g. a workdir's `config.json`)."""
        kwargs = {}
        for field in dataclasses.fields(cls):
            value = d.get(field.name)
            if value is None:
                continue
            sub = _SECTION_TYPES.get(field.name)
            if sub is None:
                kwargs[field.name] = value
                continue
            known = {f.name for f in dataclasses.fields(sub)}
            args = {k: v for k, v in value.items() if k in known}
            for k, v in args.items():
                if isinstance(v, list):
                    args[k] = tuple(v)
            kwargs[field.name] = sub(**args)
        return cls(**kwargs)


_SECTION_TYPES = {
    "data": DataConfig,
    "model": ModelConfig,
    "optim": OptimConfig,
    "run": RunConfig,
    "graft": GraftConfig,
}


def register_section(name, section_type):
    """Lets a method's config section round-trip through `from_dict`."""
    _SECTION_TYPES[name] = section_type
