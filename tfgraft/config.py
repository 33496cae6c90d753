"""Frozen run configurations, built by `train/flags.py` and read by jobs.

The library never reads absl flags: every job takes these dataclasses, so a
user can drive tfgraft from Python exactly as the command line does.
"""

import dataclasses
import math
from typing import Optional
from typing import Tuple


class ConfigError(ValueError):
    """A configuration value is out of range; the message names the flag."""


def _check(condition, flag, value, requirement):
    if not condition:
        raise ConfigError(f"--{flag}={value}: {requirement}")


def _has_keras_cv():
    """Whether keras-cv (the `randaugment` extra) is importable."""
    import importlib.util

    return importlib.util.find_spec("keras_cv") is not None


def _check_finite(config, flag_names=None):
    """Rejects NaN and +-inf in every float field (and tuple of floats).

    absl's float flags accept `inf` and `nan`, which no range check below
    catches reliably (`nan > 0` is False, `inf > 0` is True) and which are
    not JSON numbers. `flag_names` maps fields whose flag is named
    differently (`{"c": "graft_c"}`).
    """
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        items = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in items):
            flag = (flag_names or {}).get(field.name, field.name)
            shown = (
                ",".join(map(str, value)) if isinstance(value, tuple) else value
            )
            raise ConfigError(f"--{flag}={shown}: must be a finite number")


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
    flip: bool = True
    randaugment: bool = False
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0

    def __post_init__(self):
        _check_finite(self)
        _check(
            not self.randaugment or _has_keras_cv(),
            "randaugment",
            "true",
            "needs keras-cv, which is not installed; pip install "
            "'keras-cv>=0.9,<1' (README \"Dependencies\")",
        )
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
        _check_finite(self)
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
        _check_finite(self)
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
    jit: Optional[bool] = None
    accum_steps: int = 1
    precision: str = "float32"
    steps_per_loop: int = 0
    checkpoint_every: int = 1
    keep_checkpoints: int = 3
    eval_every: int = 1
    progress: bool = True
    deterministic: bool = False
    concurrent_nets: bool = False
    on_nan: str = "stop"

    def __post_init__(self):
        _check_finite(self)
        _check(self.epochs > 0, "epochs", self.epochs, "must be > 0")
        _check(self.max_steps >= 0, "max_steps", self.max_steps, "must be >= 0")
        # Seeds feed NumPy generators, which take no negative seed.
        _check(self.seed >= 0, "seed", self.seed, "must be >= 0")
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
        _check(
            self.on_nan in ("stop", "skip_batch"),
            "on_nan",
            self.on_nan,
            "must be one of stop, skip_batch",
        )


CRITERIA = ("entropy", "l1")
LEVELS = ("layer", "filter")
GRAFT_SCOPES = ("auto", "all", "conv_bn")


@dataclasses.dataclass(frozen=True)
class GraftConfig:
    """Filter Grafting options (METHODS.md §1).

    `graft_every` is 0 for "once per epoch" (the paper), a step count, or
    -1 for never: the same N nets, learning rates and data, trained
    independently (the control arm of a grafting study).
    `difflr` gives net i the initial LR lr*(1 + cos(pi*(N-i)/N))/2 (the
    paper's meaning; the reference code's flag is inverted). `scope` picks
    the tensors a layer-level graft blends: `all`, `conv_bn` (conv kernels
    and BN only, as the reference VGG16 script) or `auto` (the model's
    reference script: `conv_bn` for VGG16, `all` otherwise; see
    `tfgraft.grafting.job.resolve_scope`).
    """

    num_nets: int = 2
    criterion: str = "entropy"
    level: str = "layer"
    a: float = 0.4
    c: float = 500.0
    graft_every: int = 0
    difflr: bool = False
    scope: str = "auto"

    def __post_init__(self):
        _check_finite(self, {"a": "graft_a", "c": "graft_c"})
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
        _check(
            self.scope in GRAFT_SCOPES,
            "graft_scope",
            self.scope,
            f"must be one of {', '.join(GRAFT_SCOPES)}",
        )
        _check(0 <= self.a <= 1, "graft_a", self.a, "must be in [0, 1]")
        _check(self.c > 0, "graft_c", self.c, "must be > 0")
        _check(
            self.graft_every >= -1,
            "graft_every",
            self.graft_every,
            "must be 'epoch', 'never' or a positive number of steps",
        )


@dataclasses.dataclass(frozen=True)
class JobConfig:
    """Everything one training job needs."""

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    run: RunConfig = RunConfig()
    graft: Optional[GraftConfig] = None
    lwdna: Optional["LWDNAConfig"] = None
    ekg: Optional["EKGConfig"] = None
    stripe: Optional["StripeConfig"] = None
    l1prune: Optional["L1PruneConfig"] = None

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


IMPORTANCES = ("value", "grad")
CLASSIFIER_INPUTS = ("linear", "keep")
INITS = ("inherit", "reinit")


@dataclasses.dataclass(frozen=True)
class LWDNAConfig:
    """LW-DNA options (METHODS.md §4); the widening is `model.width_mult`.

    `ratio` is the derived net's FLOPs over the *widened* net's (DHP
    counter); x2 widening does not quite quadruple FLOPs (the RGB input
    and the logits stay), so the uniform net's budget is a little above
    0.25 (ResNet-20: 0.2514; the report's
    `equal_flops.uniform_budget_ratio`). `remain_percentage` = -1 keeps at
    least `min_channels` per layer (the reference's `mc`).
    `importance="value"` is what the reference's ImageNet ResNets use even
    with `--grad_prune`; its CIFAR ResNet uses `"grad"`.
    `classifier_input="linear"` (default, every model) prunes the
    classifier-input stream like any other but keeps at least
    `linear_percentage` of it, as the reference's LW-DNA entry point does;
    `"keep"` never prunes it, as the reference's DHP CIFAR ResNet (not
    wired to its LW-DNA entry point) does: after widening that keeps the
    widened width, so the derived net carries more parameters than the
    uniform one at the same FLOPs.
    """

    ratio: float = 0.25
    remain_percentage: float = 0.4
    linear_percentage: float = 0.45
    embedding_dim: int = 8
    epochs_grad: int = 1
    search_batch_size: int = 64
    importance: str = "value"
    grad_normalize: bool = False
    prune_threshold: float = 5e-3
    min_channels: int = 4
    classifier_input: str = "linear"
    init: str = "inherit"
    train_uniform: bool = False

    def __post_init__(self):
        _check_finite(self)
        _check(0 < self.ratio <= 1, "ratio", self.ratio, "must be in (0, 1]")
        _check(
            0 < self.remain_percentage <= 1 or self.remain_percentage == -1,
            "remain_percentage",
            self.remain_percentage,
            "must be in (0, 1] (or -1 for --min_channels)",
        )
        _check(
            0 < self.linear_percentage <= 1,
            "linear_percentage",
            self.linear_percentage,
            "must be in (0, 1]",
        )
        _check(
            self.embedding_dim >= 1,
            "embedding_dim",
            self.embedding_dim,
            "must be >= 1",
        )
        _check(
            self.epochs_grad >= 1,
            "epochs_grad",
            self.epochs_grad,
            "must be >= 1",
        )
        _check(
            self.search_batch_size > 0,
            "search_batch_size",
            self.search_batch_size,
            "must be > 0",
        )
        _check(
            self.importance in IMPORTANCES,
            "importance",
            self.importance,
            f"must be one of {', '.join(IMPORTANCES)}",
        )
        _check(
            self.prune_threshold >= 0,
            "prune_threshold",
            self.prune_threshold,
            "must be >= 0",
        )
        _check(
            self.min_channels >= 1,
            "min_channels",
            self.min_channels,
            "must be >= 1",
        )
        _check(
            self.classifier_input in CLASSIFIER_INPUTS,
            "classifier_input",
            self.classifier_input,
            f"must be one of {', '.join(CLASSIFIER_INPUTS)}",
        )
        _check(
            self.init in INITS,
            "init",
            self.init,
            f"must be one of {', '.join(INITS)}",
        )


register_section("lwdna", LWDNAConfig)


def _check_pretraining(section):
    """Checks the pretraining fields shared by the pruning jobs' sections."""
    _check(
        section.pretrain_epochs >= 0,
        "pretrain_epochs",
        section.pretrain_epochs,
        "must be >= 0",
    )
    _check(
        section.pretrain_learning_rate > 0,
        "pretrain_learning_rate",
        section.pretrain_learning_rate,
        "must be > 0",
    )
    _check(
        section.pretrain_weight_decay >= 0,
        "pretrain_weight_decay",
        section.pretrain_weight_decay,
        "must be >= 0",
    )


COST_MODES = ("as_coded", "intended")


@dataclasses.dataclass(frozen=True)
class EKGConfig:
    """EKG options (METHODS.md §3); defaults are the reference's CIFAR ones.

    `pretrained` is a `train.baseline` workdir or a checkpoint; without it,
    `pretrain_epochs > 0` pretrains the same model in `<workdir>/pretrain`
    (LR `pretrain_learning_rate` x0.1 at 30/60/90% of the epochs, coupled
    wd `pretrain_weight_decay`, Nesterov). `batch_size` is the search's,
    the warm-up pass's and the teacher logits' batch. `search_knowledge`
    scores the search with validation CE plus soft CE to the ensemble of
    the sub-networks accepted so far (the paper); False scores it with the
    CE alone (the ablation without the pseudo-supernet). `knowledge=False`
    fine-tunes with plain CE (the reference's shipped pipeline).
    """

    pretrained: Optional[str] = None
    pretrain_epochs: int = 0
    pretrain_learning_rate: float = 0.05
    pretrain_weight_decay: float = 1e-4
    target_flops_rate: float = 0.45
    search_step: float = 0.2
    cost_mode: str = "as_coded"
    batch_size: int = 256
    train_per_class: int = 256
    val_per_class: int = 32
    search_seed: int = 1
    warmup: bool = True
    num_teachers: int = 5
    search_knowledge: bool = True
    knowledge: bool = True
    temperature: float = 4.0

    def __post_init__(self):
        _check_finite(self, {"temperature": "kd_temperature"})
        _check(
            0 < self.target_flops_rate < 1,
            "target_flops_rate",
            self.target_flops_rate,
            "must be in (0, 1) (the fraction of FLOPs kept)",
        )
        _check(
            0 < self.search_step <= 1,
            "search_step",
            self.search_step,
            "must be in (0, 1]",
        )
        _check(
            self.cost_mode in COST_MODES,
            "cost_mode",
            self.cost_mode,
            f"must be one of {', '.join(COST_MODES)}",
        )
        _check_pretraining(self)
        _check(
            self.batch_size > 0,
            "ekg_batch_size",
            self.batch_size,
            "must be > 0",
        )
        _check(
            self.train_per_class >= 1,
            "search_train_per_class",
            self.train_per_class,
            "must be >= 1",
        )
        _check(
            self.val_per_class >= 1,
            "search_val_per_class",
            self.val_per_class,
            "must be >= 1",
        )
        _check(
            self.search_seed >= 0,
            "search_seed",
            self.search_seed,
            "must be >= 0",
        )
        _check(
            self.num_teachers >= 1,
            "num_teachers",
            self.num_teachers,
            "must be >= 1",
        )
        _check(
            self.temperature > 0,
            "kd_temperature",
            self.temperature,
            "must be > 0",
        )


register_section("ekg", EKGConfig)


STRIPE_FORMULATIONS = (
    "auto",
    "dense",
    "shift_add",
    "shift_add_matmul",
    "im2col",
)


@dataclasses.dataclass(frozen=True)
class StripeConfig:
    """Stripe-wise pruning options (METHODS.md §2).

    The per-step skeleton update runs when `sr > 0` and `threshold > 0`
    (the reference's `if args.sr and args.threshold`); the final pruning of
    the best checkpoint runs whenever `threshold > 0` or
    `target_flops_cut > 0`. With `target_flops_cut` (a fraction in (0, 1);
    0: off) the final pruning does not use `threshold` but the threshold
    on |FS| whose compact model removes that share of the `pff` FLOPs,
    within `target_tolerance` (absolute) where the discrete steps allow
    (`tfgraft.stripe.flops_target`, a tfgraft addition); training still
    uses `sr` and `threshold`. `extra_cuts` (fractions in (0, 1); needs
    `target_flops_cut`) prune the same selected net at more FLOPs cuts and
    report each compact net's accuracy (one training, several points of
    the accuracy-FLOPs curve; the export is the `target_flops_cut` one).
    `shape_only` freezes
    every randomly initialised weight and trains only the skeletons.
    `formulation` is the compact layers' `CompactStripeConv2D` formulation;
    `compact_jit` compiles each compact layer with XLA (also when served
    from the exported SavedModel). `dead_branches` is what replaces a
    residual branch left without stripes: "constant" (exact) or
    "shortcut" (the reference's block removal).
    """

    sr: float = 0.0
    threshold: float = 0.0
    shape_only: bool = False
    formulation: str = "auto"
    compact_jit: bool = False
    dead_branches: str = "constant"
    target_flops_cut: float = 0.0
    target_tolerance: float = 0.02
    extra_cuts: tuple = ()

    def __post_init__(self):
        _check_finite(self)
        _check(self.sr >= 0, "sr", self.sr, "must be >= 0")
        for cut in self.extra_cuts:
            _check(
                0 < cut < 1,
                "extra_cuts",
                ",".join(map(str, self.extra_cuts)),
                "every cut must be in (0, 1)",
            )
        _check(
            not self.extra_cuts or self.target_flops_cut > 0,
            "extra_cuts",
            ",".join(map(str, self.extra_cuts)),
            "needs --target_flops_cut",
        )
        _check(self.threshold >= 0, "threshold", self.threshold, "must be >= 0")
        _check(
            self.target_flops_cut == 0 or 0 < self.target_flops_cut < 1,
            "target_flops_cut",
            self.target_flops_cut,
            "must be in (0, 1) (the fraction of FLOPs removed) or 0 (off)",
        )
        _check(
            0 <= self.target_tolerance < 1,
            "target_tolerance",
            self.target_tolerance,
            "must be in [0, 1)",
        )
        _check(
            self.formulation in STRIPE_FORMULATIONS,
            "formulation",
            self.formulation,
            f"must be one of {', '.join(STRIPE_FORMULATIONS)}",
        )
        _check(
            self.dead_branches in ("constant", "shortcut"),
            "dead_branches",
            self.dead_branches,
            "must be one of constant, shortcut",
        )


register_section("stripe", StripeConfig)


@dataclasses.dataclass(frozen=True)
class L1PruneConfig:
    """L1-norm filter pruning options (Li et al., ICLR 2017).

    `pretrained` and the `pretrain_*` fields are as in `EKGConfig` (a
    `train.baseline` workdir or a checkpoint, or pretraining in
    `<workdir>/pretrain`). `target_flops_cut` is the wanted FLOPs
    reduction `1 - after / before` (PFF counter, the stripe job's), met
    within `target_tolerance` by one pruning fraction shared by every
    prunable channel group (`tfgraft.l1prune.prune`);
    `prune_streams=False` prunes block-internal channels only (the paper's
    ResNet scheme).
    """

    pretrained: Optional[str] = None
    pretrain_epochs: int = 0
    pretrain_learning_rate: float = 0.05
    pretrain_weight_decay: float = 1e-4
    target_flops_cut: float = 0.5
    target_tolerance: float = 0.02
    prune_streams: bool = True

    def __post_init__(self):
        _check(
            0 < self.target_flops_cut < 1,
            "target_flops_cut",
            self.target_flops_cut,
            "must be in (0, 1) (the fraction of FLOPs removed)",
        )
        _check(
            0 <= self.target_tolerance < 1,
            "target_tolerance",
            self.target_tolerance,
            "must be in [0, 1)",
        )
        _check_pretraining(self)


register_section("l1prune", L1PruneConfig)
