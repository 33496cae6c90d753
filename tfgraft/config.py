"""Frozen run configurations: every knob of tfgraft's jobs, declared once.

Each field of a section below is one `knob`: its default, the help of its
flag, its allowed values or range and, where the flag is not named after
the field, the flag's name. `train/flags.py` makes the absl flags, their
checks and `flags.cfg` from these declarations alone. A section checks its
knobs when it is built (`Section`), so Python users get the same one-line
`ConfigError`, naming the flag, as the command line. The library never
reads absl flags: a user can drive tfgraft from Python exactly as the
command line does.
"""

import dataclasses
import importlib.util
import math
import operator
import re
import typing
from typing import Optional
from typing import Tuple

from tfgraft import errors
from tfgraft.stripe_formulations import FORMULATIONS


class ConfigError(ValueError):
    """A configuration value is out of range; the message names the flag."""


# What changing a knob means for a run resumed in its workdir
# (`tfgraft.training.workdir`): allowed; refused unless forced; refused.
HARMLESS = "harmless"
RECIPE = "recipe"
INCOMPATIBLE = "incompatible"


@dataclasses.dataclass(frozen=True)
class Knob:
    """What a configuration field declares besides its default.

    Attributes:
        help: the flag's help.
        flag: the flag's name, if not the field's.
        choices: the allowed values (the flag is an enum).
        bounds: the allowed range: `"> 0"`, `">= 1"`, `"(0, 1]"`, ... (each
            item of a tuple field must be in it).
        also: values allowed outside `bounds` (`-1` for "automatic").
        why: the error's requirement, if not "must be <bounds>".
        words: flag words that stand for values (`{"epoch": 0}`); any
            other flag value must be a positive integer.
        resume: `HARMLESS` (how the run runs, not what it trains) or
            `INCOMPATIBLE` (what the checkpoints hold) when a resumed run
            changes it; None: its section's `resume` (`RECIPE`: what the
            next steps do).
    """

    help: str
    flag: Optional[str] = None
    choices: Optional[Tuple[str, ...]] = None
    bounds: Optional[str] = None
    also: Tuple[float, ...] = ()
    why: Optional[str] = None
    words: Optional[dict] = None
    resume: Optional[str] = None


def knob(default, help, **declared):
    """Declares one configuration field: its default and its `Knob`."""
    return dataclasses.field(
        default=default, metadata={"knob": Knob(help, **declared)}
    )


def spec(field):
    """The `Knob` of a `dataclasses.Field` declared with `knob`."""
    return field.metadata["knob"]


def flag_name(field):
    """The flag of a `dataclasses.Field` declared with `knob`."""
    return spec(field).flag or field.name


def fail(flag, value, requirement):
    """Raises the one-line `ConfigError` `--flag=value: requirement`."""
    raise ConfigError(f"--{flag}={errors.flag_value(value)}: {requirement}")


_INTERVAL = re.compile(r"^([(\[])\s*(\S+),\s*(\S+)\s*([)\]])$")
_COMPARE = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


def in_bounds(value, bounds):
    """Whether `value` is in `bounds` (`"> 0"`, `"[0, 1)"`, ...)."""
    interval = _INTERVAL.match(bounds)
    if not interval:
        op, bound = bounds.split()
        return _COMPARE[op](value, float(bound))
    left, low, high, right = interval.groups()
    above = value >= float(low) if left == "[" else value > float(low)
    below = value <= float(high) if right == "]" else value < float(high)
    return above and below


def requirement(field, value):
    """The requirement of knob `field` that `value` breaks, or None.

    Finite, one of its choices, in its range: what a section checks when
    it is built, for callers that take the knob as a Python argument and
    name it in their own error.
    """
    knob = spec(field)
    items = value if isinstance(value, tuple) else (value,)
    if any(isinstance(v, float) and not math.isfinite(v) for v in items):
        return "must be a finite number"
    if knob.choices and value is not None and value not in knob.choices:
        return f"must be one of {', '.join(knob.choices)}"
    if knob.bounds is None or value is None:
        return None
    interval = "in " if _INTERVAL.match(knob.bounds) else ""
    for v in items:
        if v not in knob.also and not in_bounds(v, knob.bounds):
            return knob.why or f"must be {interval}{knob.bounds}"
    return None


class Section:
    """A config section whose knobs check themselves when it is built.

    `check` holds what ties several knobs together; `resume` is what
    changing one of its knobs on resume means where the knob does not say.
    """

    resume = RECIPE

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            why = requirement(field, value)
            if why:
                fail(flag_name(field), value, why)
        self.check()

    def check(self):
        pass


def _bare(kind):
    """`X` of `Optional[X]`; any other type as it is."""
    if typing.get_origin(kind) is typing.Union:
        return next(a for a in typing.get_args(kind) if a is not type(None))
    return kind


def flag_kind(field):
    """`bool`, `int`, `float`, `str`, `enum` or `list` (a tuple field)."""
    kind = _bare(field.type)
    if typing.get_origin(kind) is tuple:
        return "list"
    return "enum" if spec(field).choices else kind.__name__


@dataclasses.dataclass(frozen=True)
class DataConfig(Section):
    """Which images, how they are batched and augmented (`tfgraft.data`)."""

    dataset: str = knob(
        "synthetic",
        "synthetic | tfds:<name> | folder:<path>.",
        resume=INCOMPATIBLE,
    )
    data_dir: Optional[str] = knob(
        None, "tensorflow-datasets data folder.", resume=HARMLESS
    )
    batch_size: int = knob(128, "Global batch size per net.", bounds="> 0")
    eval_batch_size: int = knob(
        100, "Evaluation batch size.", bounds="> 0", resume=HARMLESS
    )
    synthetic_train_size: int = knob(
        10000, "Images in the synthetic train split."
    )
    synthetic_test_size: int = knob(
        2000, "Images in the synthetic test split."
    )
    augment: str = knob(
        "auto",
        "Augmentation recipe (auto: the dataset's).",
        choices=("auto", "cifar", "imagenet", "none"),
    )
    flip: bool = knob(
        True,
        "Random horizontal flip in the cifar/imagenet recipes (--noflip:"
        " crops only, as the reference LW-DNA ImageNet loader).",
    )
    randaugment: bool = knob(False, "keras-cv RandAugment.")
    mixup_alpha: float = knob(
        0.0, "keras-cv MixUp alpha (0: off).", bounds=">= 0"
    )
    cutmix_alpha: float = knob(
        0.0, "keras-cv CutMix alpha (0: off).", bounds=">= 0"
    )

    def check(self):
        if self.randaugment and not importlib.util.find_spec("keras_cv"):
            fail(
                "randaugment",
                True,
                "needs keras-cv, which is not installed; pip install "
                "'keras-cv>=0.9,<1' (README \"Dependencies\")",
            )


@dataclasses.dataclass(frozen=True)
class ModelConfig(Section):
    """Which network, at which widths, with which per-paper preset."""

    resume = INCOMPATIBLE  # what the checkpoints hold, fields to come too

    name: str = knob("resnet20", "Model zoo name.", flag="model")
    width_mult: float = knob(1.0, "Width multiplier.", bounds="> 0")
    channel_config: Optional[str] = knob(None, "Per-layer widths (JSON file).")
    preset: Optional[str] = knob(
        None,
        "Per-paper model preset (default: grafting).",
        choices=("grafting", "pff", "ekg", "dhp"),
    )
    shortcut: Optional[str] = knob(
        None, "ResNet shortcut type.", choices=("A", "projection")
    )


@dataclasses.dataclass(frozen=True)
class OptimConfig(Section):
    """PyTorch-style SGD with coupled weight decay and an LR schedule."""

    learning_rate: float = knob(0.1, "Initial learning rate.", bounds="> 0")
    momentum: float = knob(0.9, "SGD momentum.", bounds="[0, 1)")
    nesterov: bool = knob(False, "Nesterov momentum.")
    weight_decay: float = knob(5e-4, "Coupled L2 weight decay.", bounds=">= 0")
    schedule: str = knob(
        "step",
        "LR schedule.",
        choices=("constant", "step", "multistep", "cosine"),
    )
    step_epochs: int = knob(60, "StepLR period in epochs.", bounds="> 0")
    gamma: float = knob(0.1, "LR decay factor.", bounds="(0, 1]")
    milestones: Tuple[float, ...] = knob(
        (), "MultiStepLR epochs (comma-separated)."
    )
    warmup_epochs: float = knob(0.0, "Linear warm-up epochs.", bounds=">= 0")

    def check(self):
        if list(self.milestones) != sorted(self.milestones):
            fail("milestones", self.milestones, "must be increasing")


@dataclasses.dataclass(frozen=True)
class RunConfig(Section):
    """How long, on what hardware and how often to checkpoint and evaluate."""

    epochs: int = knob(200, "Training epochs.", bounds="> 0", resume=HARMLESS)
    max_steps: int = knob(
        0,
        "Stop after this many steps (0: all epochs).",
        bounds=">= 0",
        resume=HARMLESS,
    )
    # Seeds feed NumPy generators, which take no negative seed.
    seed: int = knob(0, "Base random seed.", bounds=">= 0")
    strategy: str = knob(
        "mirrored",
        "tf.distribute strategy.",
        choices=("mirrored", "one_device", "multi_worker", "tpu", "default"),
        resume=HARMLESS,
    )
    jit: Optional[bool] = knob(
        None,
        "XLA-compile the per-replica forward/backward. Default: on "
        "for GPU and TPU strategies, off on CPUs (where oneDNN's "
        "convolutions beat XLA's).",
        resume=HARMLESS,
    )
    accum_steps: int = knob(
        1,
        "Gradient-accumulation micro-batches per step.",
        bounds=">= 1",
        resume=HARMLESS,
    )
    precision: str = knob(
        "float32",
        "Dtype policy.",
        choices=("float32", "mixed_float16", "mixed_bfloat16"),
        resume=INCOMPATIBLE,
    )
    steps_per_loop: int = knob(
        0,
        "Steps per tf.function call (0: min(epoch, 100)).",
        bounds=">= 0",
        why="must be >= 0 (0 = automatic)",
        resume=HARMLESS,
    )
    checkpoint_every: int = knob(
        1, "Save a checkpoint every N epochs.", bounds=">= 1", resume=HARMLESS
    )
    keep_checkpoints: int = knob(
        3, "Checkpoints kept.", bounds=">= 1", resume=HARMLESS
    )
    eval_every: int = knob(
        1,
        "Evaluate every N epochs (and at the end).",
        bounds=">= 1",
        resume=HARMLESS,
    )
    progress: bool = knob(
        True, "tqdm progress bar per epoch.", resume=HARMLESS
    )
    deterministic: bool = knob(
        False, "TF op determinism (slower).", resume=HARMLESS
    )
    on_nan: str = knob(
        "stop",
        "NaN/Inf loss or gradient: stop the job (last good checkpoint "
        "kept) or skip that net's batch.",
        choices=("stop", "skip_batch"),
        resume=HARMLESS,
    )
    concurrent_nets: bool = knob(
        False,
        "Run the nets of a step concurrently (off: one after another, "
        "faster where one net fills the device).",
        resume=HARMLESS,
    )

    def total_steps(self, steps_per_epoch):
        """The steps of the run: all epochs, or `max_steps` if fewer."""
        total = self.epochs * steps_per_epoch
        return min(total, self.max_steps) if self.max_steps else total

    def loop_steps(self, steps_per_epoch):
        """Steps per tf.function call (`steps_per_loop`, 0: automatic)."""
        return self.steps_per_loop or min(steps_per_epoch, 100)


@dataclasses.dataclass(frozen=True)
class GraftConfig(Section):
    """Filter Grafting options (METHODS.md §1).

    Where they differ from the reference code: `tfgraft.grafting.job`.
    """

    num_nets: int = knob(
        2,
        "Nets grafted (2-8).",
        bounds="[2, 8]",
        why="grafting needs 2 to 8 nets",
        resume=INCOMPATIBLE,
    )
    criterion: str = knob(
        "entropy", "Grafting information.", choices=("entropy", "l1")
    )
    level: str = knob("layer", "Grafting level.", choices=("layer", "filter"))
    a: float = knob(
        0.4,
        "A of alpha = A/pi*arctan(c*dH) + 0.5.",
        flag="graft_a",
        bounds="[0, 1]",
    )
    c: float = knob(
        500.0, "c of the same formula.", flag="graft_c", bounds="> 0"
    )
    graft_every: int = knob(
        0,
        "'epoch', a number of steps, or 'never' (the same N nets "
        "trained without grafting: the control arm of a study).",
        words={"epoch": 0, "never": -1},
        bounds=">= -1",
        why="must be 'epoch', 'never' or a positive number of steps",
    )
    scope: str = knob(
        "auto",
        "Tensors a layer-level graft blends: all | conv_bn (conv kernels "
        "and BN; classifier and conv biases kept, as the reference VGG16 "
        "script) | auto (conv_bn for vgg16, all otherwise).",
        flag="graft_scope",
        choices=("auto", "all", "conv_bn"),
    )
    difflr: bool = knob(
        False,
        "Different initial LRs lr*(1+cos(pi*(N-i)/N))/2 (paper's dlr).",
    )


@dataclasses.dataclass(frozen=True)
class LWDNAConfig(Section):
    """LW-DNA options (METHODS.md §4); the widening is `model.width_mult`.

    The reference's choices of `importance` and `classifier_input`:
    `tfgraft.lwdna.shrink.importance` and `check_classifier_input`.
    """

    ratio: float = knob(
        0.25,
        "Derived FLOPs / widened FLOPs (DHP counter), in (0, 1]; "
        "report.json equal_flops.uniform_budget_ratio is the one that "
        "matches the uniform net.",
        bounds="(0, 1]",
        resume=INCOMPATIBLE,
    )
    remain_percentage: float = knob(
        0.4,
        "Share of each latent's channels always kept (-1: min_channels).",
        bounds="(0, 1]",
        also=(-1,),
        why="must be in (0, 1] (or -1 for --min_channels)",
        resume=INCOMPATIBLE,
    )
    linear_percentage: float = knob(
        0.45,
        "Share of the classifier-input channels always kept.",
        bounds="(0, 1]",
        resume=INCOMPATIBLE,
    )
    embedding_dim: int = knob(
        8,
        "Hypernetwork embedding dimension.",
        bounds=">= 1",
        resume=INCOMPATIBLE,
    )
    epochs_grad: int = knob(
        1,
        "Search epochs; the last stops after 2 batches (1: 2 steps).",
        bounds=">= 1",
        resume=INCOMPATIBLE,
    )
    search_batch_size: int = knob(
        64,
        "Batch size of the search steps.",
        bounds="> 0",
        resume=INCOMPATIBLE,
    )
    importance: str = knob(
        "value",
        "Channel importance: value (|latent|, what the reference's "
        "ImageNet ResNets use) | grad (|dL/dlatent|).",
        choices=("value", "grad"),
        resume=INCOMPATIBLE,
    )
    grad_normalize: bool = knob(
        False, "Divide latent gradients by their max.", resume=INCOMPATIBLE
    )
    prune_threshold: float = knob(
        5e-3,
        "Initial pruning threshold pt.",
        bounds=">= 0",
        resume=INCOMPATIBLE,
    )
    min_channels: int = knob(
        4,
        "Channels kept when remain_percentage is -1.",
        bounds=">= 1",
        resume=INCOMPATIBLE,
    )
    classifier_input: str = knob(
        "linear",
        "Classifier-input stream: linear (prune, keep at least "
        "linear_percentage) | keep (never prune: stays widened).",
        choices=("linear", "keep"),
        resume=INCOMPATIBLE,
    )
    init: str = knob(
        "inherit",
        "Derived weights: inherit (from the hypernetwork) | reinit.",
        choices=("inherit", "reinit"),
    )
    train_uniform: bool = knob(
        False,
        "Also train the uniform-width original for comparison.",
        resume=HARMLESS,
    )


@dataclasses.dataclass(frozen=True)
class Pretraining(Section):
    """The pretrained net of the pruning jobs (EKG, L1 filter pruning).

    Without `pretrained`, `tfgraft.pretrained.locate_or_pretrain` trains it.
    """

    pretrained: Optional[str] = knob(
        None,
        "Pretrained net: a train.baseline workdir, a checkpoint folder "
        "or prefix, or a .weights.h5 file.",
        resume=INCOMPATIBLE,
    )
    pretrain_epochs: int = knob(
        0,
        "Without --pretrained: pretrain this many epochs in "
        "<workdir>/pretrain first (then prune and fine-tune).",
        bounds=">= 0",
        resume=INCOMPATIBLE,
    )
    pretrain_learning_rate: float = knob(
        0.05,
        "Pretraining LR (x0.1 at 30/60/90% of --pretrain_epochs).",
        bounds="> 0",
        resume=INCOMPATIBLE,
    )
    pretrain_weight_decay: float = knob(
        1e-4,
        "Pretraining coupled weight decay.",
        bounds=">= 0",
        resume=INCOMPATIBLE,
    )


@dataclasses.dataclass(frozen=True)
class EKGConfig(Pretraining):
    """EKG options (METHODS.md §3); defaults are the reference's CIFAR ones.

    Where they differ from the reference code: `tfgraft.ekg`.
    """

    target_flops_rate: float = knob(
        0.45,
        "Search stops at FLOPs / original FLOPs <= this (EKG counter).",
        bounds="(0, 1)",
        why="must be in (0, 1) (the fraction of FLOPs kept)",
        resume=INCOMPATIBLE,
    )
    search_step: float = knob(
        0.2,
        "Coarse width step of the search.",
        bounds="(0, 1]",
        resume=INCOMPATIBLE,
    )
    cost_mode: str = knob(
        "as_coded",
        "Pre-filter cost: as_coded (reference slicing bug) | intended.",
        choices=("as_coded", "intended"),
        resume=INCOMPATIBLE,
    )
    batch_size: int = knob(
        256,
        "Batch of the search, its warm-up pass and the teacher logits.",
        flag="ekg_batch_size",
        bounds="> 0",
        resume=INCOMPATIBLE,
    )
    train_per_class: int = knob(
        256,
        "train_sub: first images per class (warm-up pass).",
        flag="search_train_per_class",
        bounds=">= 1",
        resume=INCOMPATIBLE,
    )
    val_per_class: int = knob(
        32,
        "val: last training images per class (search objective).",
        flag="search_val_per_class",
        bounds=">= 1",
        resume=INCOMPATIBLE,
    )
    search_seed: int = knob(
        1,
        "Shuffle seed of the search sets.",
        bounds=">= 0",
        resume=INCOMPATIBLE,
    )
    warmup: bool = knob(
        True,
        "One SGD pass over train_sub before the search (reference).",
        flag="search_warmup",
        resume=INCOMPATIBLE,
    )
    search_knowledge: bool = knob(
        True,
        "Score the search with val CE + soft CE to the ensemble of the "
        "accepted sub-networks (paper; false: CE only, the ablation "
        "without the pseudo-supernet).",
        resume=INCOMPATIBLE,
    )
    num_teachers: int = knob(
        5, "Teachers in the memory bank.", bounds=">= 1", resume=INCOMPATIBLE
    )
    knowledge: bool = knob(
        True, "Fine-tune with the knowledge curriculum (false: plain CE)."
    )
    temperature: float = knob(
        4.0,
        "Distillation temperature T.",
        flag="kd_temperature",
        bounds="> 0",
    )


@dataclasses.dataclass(frozen=True)
class StripeConfig(Section):
    """Stripe-wise pruning options (METHODS.md §2).

    When the skeleton update and the final pruning run, and how
    `target_flops_cut` and `steer_sr` choose its threshold:
    `tfgraft.stripe.job`. `extra_cuts` prune the same selected net at more
    FLOPs cuts (more points of the accuracy-FLOPs curve from one training);
    the export is the `target_flops_cut` one.
    """

    sr: float = knob(
        0.0,
        "L1 strength on the Filter Skeleton (paper's alpha; 0: off).",
        bounds=">= 0",
    )
    threshold: float = knob(
        0.0,
        "Stripes with |FS| <= threshold are masked and pruned (0: off).",
        bounds=">= 0",
    )
    shape_only: bool = knob(
        False, "Freeze the random initial weights; train only the skeletons."
    )
    formulation: str = knob(
        "auto",
        "CompactStripeConv2D formulation of the exported model; calibrate: "
        "per layer the fastest, timed on this machine.",
        choices=(*FORMULATIONS, "calibrate"),
        resume=HARMLESS,
    )
    calibrate_batch: int = knob(
        1,
        "Batch size the calibrate formulation times (the serving batch).",
        bounds=">= 1",
    )
    compact_jit: bool = knob(
        False,
        "XLA-compile each compact layer (kept in the SavedModel).",
        resume=HARMLESS,
    )
    dead_branches: str = knob(
        "constant",
        "Residual branch left without stripes: add its constant output "
        "(exact) | shortcut (the reference drops the block and its ReLU).",
        choices=("constant", "shortcut"),
        resume=HARMLESS,
    )
    target_flops_cut: float = knob(
        0.0,
        "Prune the selected net at the |FS| threshold that removes this "
        "fraction of the FLOPs (pff counter; 0: prune at --threshold).",
        bounds="(0, 1)",
        also=(0,),
        why="must be in (0, 1) (the fraction of FLOPs removed) or 0 (off)",
    )
    target_tolerance: float = knob(
        0.02,
        "Accepted distance of the achieved FLOPs cut to "
        "--target_flops_cut (absolute fraction).",
        bounds="[0, 1)",
    )
    extra_cuts: Tuple[float, ...] = knob(
        (),
        "More FLOPs cuts to prune the same selected net at and report "
        "(e.g. 0.4,0.9; needs --target_flops_cut).",
        bounds="(0, 1)",
        why="every cut must be in (0, 1)",
    )
    steer_sr: bool = knob(
        False,
        "Adapt --sr at each epoch end so the FLOPs cut at --threshold "
        "ramps to --target_flops_cut by 75% of the epochs.",
    )

    def check(self):
        if self.extra_cuts and not self.target_flops_cut:
            fail("extra_cuts", self.extra_cuts, "needs --target_flops_cut")
        if self.steer_sr:
            if not self.target_flops_cut:
                fail("steer_sr", True, "needs --target_flops_cut")
            if not (self.sr > 0 and self.threshold > 0):
                fail(
                    "steer_sr",
                    True,
                    "needs --sr > 0 and --threshold > 0 "
                    "(the update it steers)",
                )


@dataclasses.dataclass(frozen=True)
class L1PruneConfig(Pretraining):
    """L1-norm filter pruning options (Li et al., ICLR 2017).

    `target_flops_cut` is met within `target_tolerance` by one pruning
    fraction shared by every prunable channel group (`tfgraft.l1prune.prune`).
    """

    target_flops_cut: float = knob(
        0.5,
        "FLOPs reduction to reach, 1 - pruned / unpruned FLOPs (PFF "
        "counter, as the stripe job reports it), in (0, 1).",
        bounds="(0, 1)",
        why="must be in (0, 1) (the fraction of FLOPs removed)",
    )
    target_tolerance: float = knob(
        0.02,
        "Allowed |achieved - target| FLOPs cut (absolute).",
        bounds="[0, 1)",
    )
    prune_streams: bool = knob(
        True,
        "Also prune residual-stream channels (summed L1 norm over the "
        "convs writing a stage's stream); false: block-internal "
        "channels only, as Li et al. prune ResNets.",
    )


@dataclasses.dataclass(frozen=True)
class JobConfig:
    """Everything one training job needs: one section per concern.

    The method sections (`graft`, `lwdna`, ...) are None for the jobs of
    other methods.
    """

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    run: RunConfig = RunConfig()
    graft: Optional[GraftConfig] = None
    lwdna: Optional[LWDNAConfig] = None
    ekg: Optional[EKGConfig] = None
    stripe: Optional[StripeConfig] = None
    l1prune: Optional[L1PruneConfig] = None

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        """Inverse of `to_dict` (e.g. a workdir's `config.json`)."""
        sections = {}
        for name, section_type in section_types().items():
            if d.get(name) is None:
                continue
            known = {f.name for f in dataclasses.fields(section_type)}
            sections[name] = section_type(
                **{
                    k: tuple(v) if isinstance(v, list) else v
                    for k, v in d[name].items()
                    if k in known
                }
            )
        return cls(**sections)


def section_types():
    """`{section name: section type}` of `JobConfig`, in field order."""
    return {f.name: _bare(f.type) for f in dataclasses.fields(JobConfig)}


def field_of(dotted):
    """The `dataclasses.Field` of a dotted `JobConfig` field (`graft.c`)."""
    section, _, name = dotted.partition(".")
    fields = dataclasses.fields(section_types()[section])
    return {field.name: field for field in fields}[name]


def resume_kind(dotted):
    """What changing a dotted `JobConfig` field on resume is: `HARMLESS`,
    `RECIPE` or `INCOMPATIBLE` (its knob's `resume`, else its section's).

    `job`, and a section present on one side only, are `INCOMPATIBLE`; a
    field no section declares (one added later) is its section's kind.
    """
    section, _, name = dotted.partition(".")
    if not name:
        return INCOMPATIBLE
    section_type = section_types().get(section)
    if section_type is None:
        return RECIPE
    try:
        declared = spec(field_of(dotted)).resume
    except KeyError:  # a field added later
        declared = None
    return declared or section_type.resume


def argument_flag(argument):
    """The flag that feeds a library argument of this name, or None.

    The knob flag of that name (`threshold`, `batch_size`), else the flag
    of the one knob field of that name (`name` -> `model`, `temperature` ->
    `kd_temperature`). A job that passes a field under another name says
    so at the call (`tfgraft.errors.flag_names`).
    """
    fields = [
        field
        for section_type in section_types().values()
        for field in dataclasses.fields(section_type)
    ]
    if any(flag_name(f) == argument for f in fields):
        return argument
    flags = {flag_name(f) for f in fields if f.name == argument}
    return flags.pop() if len(flags) == 1 else None
