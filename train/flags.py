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

# Read before TensorFlow loads (train/startup.py); not a run setting, so
# not written to flags.cfg.
TF_LOG = flags.DEFINE_bool(
    "tf_log",
    False,
    "Show TensorFlow's own log: its C++ start-up lines (oneDNN, CUDA), "
    "C++ INFO/WARNING records (unless TF_CPP_MIN_LOG_LEVEL is set) and "
    "the INFO records of its Python modules. Off: the console shows "
    "tfgraft's lines, warnings and errors only.",
)
_NOT_RECORDED = {"tf_log"}


class _Defs:
    """`flags.DEFINE_*` bound to one FlagValues (tests use fresh ones)."""

    def __init__(self, flag_values):
        self._fv = flag_values

    def __getattr__(self, name):
        define = getattr(flags, name)

        def bound(*args, **kwargs):
            return define(*args, flag_values=self._fv, **kwargs)

        return bound


class _Common:
    def __init__(self, flag_values):
        d = _Defs(flag_values)
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
            "jit",
            None,
            "XLA-compile the per-replica forward/backward. Default: on "
            "for GPU and TPU strategies, off on CPUs (where oneDNN's "
            "convolutions beat XLA's).",
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
        self.on_nan = d.DEFINE_enum(
            "on_nan",
            "stop",
            ["stop", "skip_batch"],
            "NaN/Inf loss or gradient: stop the job (last good checkpoint "
            "kept) or skip that net's batch.",
        )
        self.concurrent_nets = d.DEFINE_bool(
            "concurrent_nets",
            False,
            "Run the nets of a step concurrently (off: one after another, "
            "faster where one net fills the device).",
        )
        self.force_resume = d.DEFINE_bool(
            "force_resume",
            False,
            "Resume a --workdir whose run was started with other training "
            "settings (learning rate, schedule, augmentation, seed, batch "
            "size, method constants); recorded in invocations.json. Never "
            "allowed for what the checkpoints hold (job, model, widths, "
            "dataset, precision, number of nets, search settings).",
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
        self.flip = d.DEFINE_bool(
            "flip",
            True,
            "Random horizontal flip in the cifar/imagenet recipes (--noflip:"
            " crops only, as the reference LW-DNA ImageNet loader).",
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
    def __init__(self, flag_values):
        d = _Defs(flag_values)
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
            "graft_every",
            "epoch",
            "'epoch', a number of steps, or 'never' (the same N nets "
            "trained without grafting: the control arm of a study).",
        )
        self.graft_scope = d.DEFINE_string(
            "graft_scope",
            "auto",
            "Tensors a layer-level graft blends: all | conv_bn (conv kernels "
            "and BN; classifier and conv biases kept, as the reference VGG16 "
            "script) | auto (conv_bn for vgg16, all otherwise).",
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


class _LWDNA:
    def __init__(self, flag_values):
        d = _Defs(flag_values)
        self.ratio = d.DEFINE_float(
            "ratio",
            0.25,
            "Derived FLOPs / widened FLOPs (DHP counter), in (0, 1]; "
            "report.json equal_flops.uniform_budget_ratio is the one that "
            "matches the uniform net.",
        )
        self.remain_percentage = d.DEFINE_float(
            "remain_percentage",
            0.4,
            "Share of each latent's channels always kept (-1: min_channels).",
        )
        self.linear_percentage = d.DEFINE_float(
            "linear_percentage",
            0.45,
            "Share of the classifier-input channels always kept.",
        )
        self.embedding_dim = d.DEFINE_integer(
            "embedding_dim", 8, "Hypernetwork embedding dimension."
        )
        self.epochs_grad = d.DEFINE_integer(
            "epochs_grad",
            1,
            "Search epochs; the last stops after 2 batches (1: 2 steps).",
        )
        self.search_batch_size = d.DEFINE_integer(
            "search_batch_size", 64, "Batch size of the search steps."
        )
        self.importance = d.DEFINE_string(
            "importance",
            "value",
            "Channel importance: value (|latent|, what the reference's "
            "ImageNet ResNets use) | grad (|dL/dlatent|).",
        )
        self.grad_normalize = d.DEFINE_bool(
            "grad_normalize", False, "Divide latent gradients by their max."
        )
        self.prune_threshold = d.DEFINE_float(
            "prune_threshold", 5e-3, "Initial pruning threshold pt."
        )
        self.min_channels = d.DEFINE_integer(
            "min_channels", 4, "Channels kept when remain_percentage is -1."
        )
        self.classifier_input = d.DEFINE_string(
            "classifier_input",
            "linear",
            "Classifier-input stream: linear (prune, keep at least "
            "linear_percentage) | keep (never prune: stays widened).",
        )
        self.init = d.DEFINE_string(
            "init",
            "inherit",
            "Derived weights: inherit (from the hypernetwork) | reinit.",
        )
        self.train_uniform = d.DEFINE_bool(
            "train_uniform",
            False,
            "Also train the uniform-width original for comparison.",
        )


_GROUP_TYPES["lwdna"] = _LWDNA


class _Pretrained:
    """The pretrained net of the pruning jobs (EKG, L1 filter pruning)."""

    def __init__(self, flag_values):
        d = _Defs(flag_values)
        self.pretrained = d.DEFINE_string(
            "pretrained",
            None,
            "Pretrained net: a train.baseline workdir, a checkpoint folder "
            "or prefix, or a .weights.h5 file.",
        )
        self.pretrain_epochs = d.DEFINE_integer(
            "pretrain_epochs",
            0,
            "Without --pretrained: pretrain this many epochs in "
            "<workdir>/pretrain first (then prune and fine-tune).",
        )
        self.pretrain_learning_rate = d.DEFINE_float(
            "pretrain_learning_rate",
            0.05,
            "Pretraining LR (x0.1 at 30/60/90% of --pretrain_epochs).",
        )
        self.pretrain_weight_decay = d.DEFINE_float(
            "pretrain_weight_decay", 1e-4, "Pretraining coupled weight decay."
        )


_GROUP_TYPES["pretrained"] = _Pretrained


class _EKG:
    def __init__(self, flag_values):
        d = _Defs(flag_values)
        self.target_flops_rate = d.DEFINE_float(
            "target_flops_rate",
            0.45,
            "Search stops at FLOPs / original FLOPs <= this (EKG counter).",
        )
        self.search_step = d.DEFINE_float(
            "search_step", 0.2, "Coarse width step of the search."
        )
        self.cost_mode = d.DEFINE_enum(
            "cost_mode",
            "as_coded",
            list(cfg.COST_MODES),
            "Pre-filter cost: as_coded (reference slicing bug) | intended.",
        )
        self.ekg_batch_size = d.DEFINE_integer(
            "ekg_batch_size",
            256,
            "Batch of the search, its warm-up pass and the teacher logits.",
        )
        self.search_train_per_class = d.DEFINE_integer(
            "search_train_per_class",
            256,
            "train_sub: first images per class (warm-up pass).",
        )
        self.search_val_per_class = d.DEFINE_integer(
            "search_val_per_class",
            32,
            "val: last training images per class (search objective).",
        )
        self.search_seed = d.DEFINE_integer(
            "search_seed", 1, "Shuffle seed of the search sets."
        )
        self.search_warmup = d.DEFINE_bool(
            "search_warmup",
            True,
            "One SGD pass over train_sub before the search (reference).",
        )
        self.search_knowledge = d.DEFINE_bool(
            "search_knowledge",
            True,
            "Score the search with val CE + soft CE to the ensemble of the "
            "accepted sub-networks (paper; false: CE only, the ablation "
            "without the pseudo-supernet).",
        )
        self.num_teachers = d.DEFINE_integer(
            "num_teachers", 5, "Teachers in the memory bank."
        )
        self.knowledge = d.DEFINE_bool(
            "knowledge",
            True,
            "Fine-tune with the knowledge curriculum (false: plain CE).",
        )
        self.kd_temperature = d.DEFINE_float(
            "kd_temperature", 4.0, "Distillation temperature T."
        )


_GROUP_TYPES["ekg"] = _EKG


class _Stripe:
    def __init__(self, flag_values):
        d = _Defs(flag_values)
        self.sr = d.DEFINE_float(
            "sr",
            0.0,
            "L1 strength on the Filter Skeleton (paper's alpha; 0: off).",
        )
        self.threshold = d.DEFINE_float(
            "threshold",
            0.0,
            "Stripes with |FS| <= threshold are masked and pruned (0: off).",
        )
        self.shape_only = d.DEFINE_bool(
            "shape_only",
            False,
            "Freeze the random initial weights; train only the skeletons.",
        )
        self.formulation = d.DEFINE_enum(
            "formulation",
            "auto",
            list(cfg.STRIPE_FORMULATIONS),
            "CompactStripeConv2D formulation of the exported model.",
        )
        self.compact_jit = d.DEFINE_bool(
            "compact_jit",
            False,
            "XLA-compile each compact layer (kept in the SavedModel).",
        )
        self.dead_branches = d.DEFINE_enum(
            "dead_branches",
            "constant",
            ["constant", "shortcut"],
            "Residual branch left without stripes: add its constant output "
            "(exact) | shortcut (the reference drops the block and its ReLU).",
        )
        self.target_flops_cut = d.DEFINE_float(
            "target_flops_cut",
            0.0,
            "Prune the selected net at the |FS| threshold that removes this "
            "fraction of the FLOPs (pff counter; 0: prune at --threshold).",
        )
        self.target_tolerance = d.DEFINE_float(
            "target_tolerance",
            0.02,
            "Accepted distance of the achieved FLOPs cut to "
            "--target_flops_cut (absolute fraction).",
        )
        self.extra_cuts = d.DEFINE_list(
            "extra_cuts",
            [],
            "More FLOPs cuts to prune the same selected net at and report "
            "(e.g. 0.4,0.9; needs --target_flops_cut).",
        )


_GROUP_TYPES["stripe"] = _Stripe


class _L1Prune:
    def __init__(self, flag_values):
        d = _Defs(flag_values)
        self.target_flops_cut = d.DEFINE_float(
            "target_flops_cut",
            0.5,
            "FLOPs reduction to reach, 1 - pruned / unpruned FLOPs (PFF "
            "counter, as the stripe job reports it), in (0, 1).",
        )
        self.target_tolerance = d.DEFINE_float(
            "target_tolerance",
            0.02,
            "Allowed |achieved - target| FLOPs cut (absolute).",
        )
        self.prune_streams = d.DEFINE_bool(
            "prune_streams",
            True,
            "Also prune residual-stream channels (summed L1 norm over the "
            "convs writing a stage's stream); false: block-internal "
            "channels only, as Li et al. prune ResNets.",
        )


_GROUP_TYPES["l1prune"] = _L1Prune


def _l1prune_config(groups):
    if "l1prune" not in groups:
        return None
    g, p = groups["l1prune"], groups["pretrained"]
    return cfg.L1PruneConfig(
        pretrained=p.pretrained.value,
        pretrain_epochs=p.pretrain_epochs.value,
        pretrain_learning_rate=p.pretrain_learning_rate.value,
        pretrain_weight_decay=p.pretrain_weight_decay.value,
        target_flops_cut=g.target_flops_cut.value,
        target_tolerance=g.target_tolerance.value,
        prune_streams=g.prune_streams.value,
    )


def _stripe_config(groups):
    if "stripe" not in groups:
        return None
    g = groups["stripe"]
    return cfg.StripeConfig(
        sr=g.sr.value,
        threshold=g.threshold.value,
        shape_only=g.shape_only.value,
        formulation=g.formulation.value,
        compact_jit=g.compact_jit.value,
        dead_branches=g.dead_branches.value,
        target_flops_cut=g.target_flops_cut.value,
        target_tolerance=g.target_tolerance.value,
        extra_cuts=_floats("extra_cuts", g.extra_cuts.value),
    )


def _floats(flag, values):
    try:
        return tuple(float(v) for v in values)
    except ValueError:
        raise cfg.ConfigError(
            f"--{flag}={','.join(values)}: must be numbers"
        ) from None


def _ekg_config(groups):
    if "ekg" not in groups:
        return None
    g, p = groups["ekg"], groups["pretrained"]
    return cfg.EKGConfig(
        pretrained=p.pretrained.value,
        pretrain_epochs=p.pretrain_epochs.value,
        pretrain_learning_rate=p.pretrain_learning_rate.value,
        pretrain_weight_decay=p.pretrain_weight_decay.value,
        target_flops_rate=g.target_flops_rate.value,
        search_step=g.search_step.value,
        cost_mode=g.cost_mode.value,
        batch_size=g.ekg_batch_size.value,
        train_per_class=g.search_train_per_class.value,
        val_per_class=g.search_val_per_class.value,
        search_seed=g.search_seed.value,
        warmup=g.search_warmup.value,
        num_teachers=g.num_teachers.value,
        search_knowledge=g.search_knowledge.value,
        knowledge=g.knowledge.value,
        temperature=g.kd_temperature.value,
    )


# Every training job, once: its flag groups (configs_test parses every
# config with the groups of the job its header command names) and its class
# as "module:Class" (`train.export` rebuilds a workdir's net with it; the
# name is the `job` of its job.json and report.json).
JOBS = {
    "baseline": (("common",), "tfgraft.training.job:Job"),
    "grafting": (("common", "grafting"), "tfgraft.grafting.job:GraftingJob"),
    "stripe": (("common", "stripe"), "tfgraft.stripe.job:StripeJob"),
    "ekg": (("common", "pretrained", "ekg"), "tfgraft.ekg.job:EKGJob"),
    "lwdna": (("common", "lwdna"), "tfgraft.lwdna.job:LWDNAJob"),
    "l1prune": (
        ("common", "pretrained", "l1prune"),
        "tfgraft.l1prune.job:L1PruneJob",
    ),
}
JOB_GROUPS = {name: groups for name, (groups, _) in JOBS.items()}


def job_class(name):
    """The job class `JOBS` names for `name` (imported on first use)."""
    import importlib

    if name not in JOBS:
        raise cfg.ConfigError(
            f"--job={name}: unknown job; one of {', '.join(sorted(JOBS))}"
        )
    module, cls = JOBS[name][1].split(":")
    return getattr(importlib.import_module(module), cls)


def define(*names, flag_values=None):
    """Defines the named flag groups once per FlagValues; returns them."""
    fv = FLAGS if flag_values is None else flag_values
    groups = _GROUPS.setdefault(id(fv), {})
    out = []
    for name in names:
        if name not in groups:
            groups[name] = _GROUP_TYPES[name](fv)
        out.append(groups[name])
    return out if len(out) > 1 else out[0]


def _int_or_epoch(flag, value):
    if value == "epoch":
        return 0
    if value == "never":
        return -1
    try:
        steps = int(value)
    except ValueError:
        raise cfg.ConfigError(
            f"--{flag}={value}: must be 'epoch', 'never' or a positive integer"
        ) from None
    if steps <= 0:
        raise cfg.ConfigError(f"--{flag}={value}: must be > 0")
    return steps


def _lwdna_config(groups):
    if "lwdna" not in groups:
        return None
    g = groups["lwdna"]
    return cfg.LWDNAConfig(
        ratio=g.ratio.value,
        remain_percentage=g.remain_percentage.value,
        linear_percentage=g.linear_percentage.value,
        embedding_dim=g.embedding_dim.value,
        epochs_grad=g.epochs_grad.value,
        search_batch_size=g.search_batch_size.value,
        importance=g.importance.value,
        grad_normalize=g.grad_normalize.value,
        prune_threshold=g.prune_threshold.value,
        min_channels=g.min_channels.value,
        classifier_input=g.classifier_input.value,
        init=g.init.value,
        train_uniform=g.train_uniform.value,
    )


def job_config(flag_values=None):
    """Builds the `JobConfig` the defined flags describe."""
    groups = _GROUPS[id(FLAGS if flag_values is None else flag_values)]
    c = groups["common"]
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
    if "grafting" in groups:
        g = groups["grafting"]
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
            scope=g.graft_scope.value,
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
            flip=c.flip.value,
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
            concurrent_nets=c.concurrent_nets.value,
            on_nan=c.on_nan.value,
        ),
        graft=graft,
        lwdna=_lwdna_config(groups),
        ekg=_ekg_config(groups),
        stripe=_stripe_config(groups),
        l1prune=_l1prune_config(groups),
    )


def flags_text(flag_values=None):
    """The resolved tfgraft flags as flagfile text (a valid flagfile)."""
    fv = FLAGS if flag_values is None else flag_values
    lines = ["# Resolved flags of this run; reusable as --flagfile."]
    for flag in fv.get_flags_for_module(__name__):
        if flag.value is None or flag.name in _NOT_RECORDED:
            continue
        serialized = flag.serialize()
        if serialized:
            lines.append(serialized)
    return "\n".join(lines) + "\n"


_FLAGFILE = re.compile(r"^--flagfile=(.+)$")
_DIRECTIVE = re.compile(r"^--?(flagfile|recipe)(?:=(.*))?$")
_HELP = re.compile(r"^--?(\?|help|helpshort|helpfull|helpxml)(=.*)?$")

# The recipes shipped with tfgraft: the `configs` folder beside the folder
# of this package, which is `<clone>/configs` next to `<clone>/train` in a
# clone and `tfgraft/configs` next to `tfgraft/train` in an installed wheel
# (pyproject.toml maps both there).
RECIPES_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs"
)


def recipe_path(name):
    """The shipped recipe `name` (`quickstart` or `quickstart.cfg`)."""
    base = name[: -len(".cfg")] if name.endswith(".cfg") else name
    path = os.path.join(RECIPES_DIR, base + ".cfg")
    if os.sep in base or "/" in base or not os.path.isfile(path):
        raise cfg.ConfigError(
            f"--recipe={name}: no such recipe in {RECIPES_DIR} (the name of "
            "one of its .cfg files, e.g. --recipe=quickstart)"
        )
    return path


def resolve_flagfile(path):
    """Where `--flagfile=path` is read from, or None if nowhere.

    As absl does, `path` is read relative to the current directory. If no
    such file exists and `path` is `configs/<name>.cfg` or `<name>.cfg`,
    the recipe of that name shipped with tfgraft is read instead, so the
    README's commands (and recipes that include `configs/<base>.cfg`) work
    from any directory after `pip install tfgraft`.
    """
    path = os.path.expanduser(path)
    if os.path.isfile(path):
        return path
    head, name = os.path.split(os.path.normpath(path))
    if not os.path.isabs(path) and head in ("", "configs"):
        shipped = os.path.join(RECIPES_DIR, name)
        if os.path.isfile(shipped):
            return shipped
    return None


def _flagfile_lines(path, where, stack):
    """The flag lines of the flagfile `path`, nested flagfiles expanded."""
    resolved = resolve_flagfile(path)
    if resolved is None:
        raise cfg.ConfigError(f"{where}--flagfile={path}: no such file")
    key = os.path.realpath(resolved)
    if key in stack:
        raise cfg.ConfigError(
            f"{where}--flagfile={path}: includes itself (through "
            f"{' -> '.join(stack + [key])})"
        )
    lines = []
    with open(resolved) as f:
        for number, line in enumerate(f, 1):
            text = line.strip()
            if not text or text.startswith(("#", "//")):
                continue
            nested = _FLAGFILE.match(text)
            if nested:
                lines.extend(
                    _flagfile_lines(
                        nested.group(1), f"{path}:{number}: ", stack + [key]
                    )
                )
                continue
            if re.search(r"\s#", text):
                raise cfg.ConfigError(
                    f"{path}:{number}: trailing comment in '{text}'; "
                    "put comments on their own '#' line"
                )
            lines.append(text)
    return lines


def expand_flagfiles(args):
    """`args` with every flagfile and recipe replaced by its flag lines.

    What absl does with `--flagfile=` (each one replaced in place by its
    lines, nested ones too; comment and blank lines dropped; flags after it
    override it), with tfgraft's path rule (`resolve_flagfile`) and checks:
    a trailing `# comment` (absl would keep it as part of the value), a
    missing file and a flagfile that includes itself stop with one line
    naming the file and line. `--recipe=NAME` is short for the shipped
    `--flagfile=configs/NAME.cfg`. Arguments after `--` are left alone.

    Args:
        args: the command-line arguments, without the program name.

    Returns:
        The arguments absl then parses (they hold no flagfile).
    """
    out = []
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "--":
            out.append(arg)
            out.extend(rest)
            break
        match = _DIRECTIVE.match(arg)
        if not match:
            out.append(arg)
            continue
        kind, value = match.groups()
        if value is None:  # --flagfile PATH
            if not rest:
                raise cfg.ConfigError(f"--{kind}: needs a value")
            value = rest.pop(0)
        if kind == "recipe":
            value = recipe_path(value)
        out.extend(_flagfile_lines(value, "", []))
    return out


def check_flagfiles(argv):
    """Rejects flagfile lines that absl would silently misread.

    The checks of `expand_flagfiles` (which `parse` runs), without using
    its result: a trailing `# comment`, a missing or self-including file,
    each named with its file and line.
    """
    expand_flagfiles(argv)


def user_errors():
    """Exception types reported as one line (no traceback) by `run`."""
    from tfgraft import data
    from tfgraft import export
    from tfgraft import io
    from tfgraft import models
    from tfgraft import pretrained
    from tfgraft.ekg import errors as ekg_errors
    from tfgraft.l1prune import prune as l1prune_lib
    from tfgraft.lwdna import hypernet as lwdna_hypernet
    from tfgraft.stripe import skeleton as stripe_skeleton
    from tfgraft.training import loop

    return (
        stripe_skeleton.StripePruningError,
        ekg_errors.EKGError,
        pretrained.PretrainedError,
        l1prune_lib.L1PruneError,
        lwdna_hypernet.LWDNAError,
        cfg.ConfigError,
        data.DataError,
        models.ChannelConfigError,
        models.UnknownModelError,
        export.ExportError,
        io.WriteError,
        loop.CheckpointError,
        loop.NonFiniteError,
        FileExistsError,
        PermissionError,
        flags.IllegalFlagValueError,
    )


def job_main(job_class, flag_values=None):
    """The `main(argv)` of a training entry point running `job_class`.

    A workdir that holds another run stops with one line in flag names;
    Ctrl-C exits with 130 and one line naming the last checkpoint.
    """
    fv = FLAGS if flag_values is None else flag_values

    def main(argv):
        from tfgraft.training import workdir as workdir_lib

        if len(argv) > 1:
            raise flags.IllegalFlagValueError(
                f"unexpected arguments: {' '.join(argv[1:])}"
            )
        common = _GROUPS[id(fv)]["common"]
        try:
            job_class(
                job_config(fv),
                common.workdir.value,
                flags_text=flags_text(fv),
                force_resume=common.force_resume.value,
            ).run()
        except workdir_lib.WorkdirMismatchError as e:
            raise cfg.ConfigError(mismatch_message(e)) from None
        except KeyboardInterrupt:
            _exit_interrupted(common.workdir.value)

    return main


# Config fields whose flag is not named after the field.
_FIELD_FLAGS = {
    "model.name": "model",
    "graft.a": "graft_a",
    "graft.c": "graft_c",
    "graft.scope": "graft_scope",
    "ekg.batch_size": "ekg_batch_size",
    "ekg.train_per_class": "search_train_per_class",
    "ekg.val_per_class": "search_val_per_class",
    "ekg.warmup": "search_warmup",
    "ekg.temperature": "kd_temperature",
}


def field_flag(field):
    """The flag of a dotted `JobConfig` field (`graft.c` -> `graft_c`)."""
    return _FIELD_FLAGS.get(field, field.split(".")[-1])


def _flag_setting(field, value):
    if "." not in field:  # a whole section, present on one side only
        return f"{'no ' if value is None else ''}--{field} settings"
    flag = field_flag(field)
    if value is None:
        return f"no --{flag}"
    if isinstance(value, bool):
        value = str(value).lower()
    elif isinstance(value, list):
        value = ",".join(map(str, value))
    elif field == "graft.graft_every":
        value = {0: "epoch", -1: "never"}.get(value, value)
    return f"--{flag}={value}"


def _entry_name(job):
    return f"train.{job}" if job in JOB_GROUPS else job


def mismatch_message(error):
    """A `WorkdirMismatchError` as one line in flag names."""
    workdir = f"--workdir={error.workdir}"
    diffs = error.differences
    if diffs[0].field == "job":
        return (
            f"{workdir} holds a {_entry_name(diffs[0].recorded)} run, this "
            f"command is {_entry_name(diffs[0].current)}; use a new --workdir"
        )
    held = " ".join(_flag_setting(d.field, d.recorded) for d in diffs)
    now = " ".join(_flag_setting(d.field, d.current) for d in diffs)
    text = (
        f"{workdir} holds a run with {held}, this command has {now}; use a "
        "new --workdir"
    )
    if all(d.kind == "recipe" for d in diffs):
        text += " (or --force_resume to continue it with the new values)"
    elif error.force_resume:
        text += " (--force_resume cannot change what the checkpoints hold)"
    return text


def _exit_interrupted(workdir):
    """Ctrl-C: one line naming the newest checkpoint; exits with 130."""
    import glob

    import tensorflow as tf

    folders = [os.path.join(workdir, "checkpoints")] + sorted(
        glob.glob(os.path.join(workdir, "*", "checkpoints"))
    )
    # The newest of the job's checkpoints (multi-phase jobs keep theirs in
    # sub-folders such as derived/ or pretrain/).
    paths = [tf.train.latest_checkpoint(f) for f in folders]
    paths = [p for p in paths if p]
    if paths:
        last = max(paths, key=lambda p: os.path.getmtime(p + ".index"))
        where = f"last checkpoint: {last}"
    else:
        where = "no checkpoint yet"
    print(
        f"error: interrupted; {where}; run the same command again to resume",
        file=sys.stderr,
    )
    sys.exit(130)


def run_job(job_class):
    """Runs a training entry point: flags -> `JobConfig` -> `job_class`.

    The job's flag groups must be defined (`define(...)`) at import of the
    entry-point module; `--workdir` is required.
    """
    flags.mark_flags_as_required(["workdir"])
    run(job_main(job_class))


def _exit_with(error):
    """Prints `error: <message>` as one line on stderr; exits with 2."""
    lines = [x.strip() for x in str(error).splitlines() if x.strip()]
    print(f"error: {'; '.join(lines) or type(error).__name__}", file=sys.stderr)
    sys.exit(2)


def parse(argv, flag_values=None):
    """Parses `argv` as `app.run` does, but fails with one line (exit 2).

    Expands the flagfiles first (`expand_flagfiles`: shipped recipes by
    name or path, one-line errors for bad flagfile lines); unknown flags, values
    of the wrong type and missing required flags are reported as
    `error: <message naming the flag>` instead of absl's usage text.
    Returns the remaining arguments (program name first).
    """
    fv = FLAGS if flag_values is None else flag_values
    try:
        return fv(argv[:1] + expand_flagfiles(argv[1:]))
    except (cfg.ConfigError, flags.Error) as e:
        _exit_with(e)
    except SystemExit as e:
        # absl's --help/--helpfull/--helpshort/--helpxml print the help and
        # exit with 1; asking for help is a success.
        if e.code == 1 and any(_HELP.match(a) for a in argv[1:]):
            sys.exit(0)
        raise


def guard(main):
    """Wraps `main(argv)`: a `user_errors()` exception exits with one line."""

    def guarded(argv):
        from tfgraft import io
        from train import startup

        startup.configure_logging(TF_LOG.value)
        try:
            return main(argv)
        except user_errors() as e:
            _exit_with(e)
        except OSError as e:
            # Whatever the file system refused (an unreadable file, a
            # symlink loop, a full disk) is the environment, not a bug:
            # one line naming the path.
            _exit_with(io.os_error_line(e.filename or "(no path)", e))

    return guarded


def run(main):
    """`app.run(main)` with flagfile checks and one-line user errors."""
    app.run(guard(main), flags_parser=parse)
