"""Learning-rate schedules stepped per optimizer iteration.

Epoch-based PyTorch schedules (StepLR, MultiStepLR stepped once per epoch)
are expressed in steps with `steps_per_epoch`, so the rate is constant within
an epoch exactly as in the reference scripts.
"""

import inspect
import math

import keras
from keras import ops

from tfgraft.config import OptimConfig


class _WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`_rate(float32 step)` after the linear warm-up (`_warmup`); the
    config is the attributes named as the constructor's arguments.
    Every rate is linear in `learning_rate`, warm-up included."""

    def __call__(self, step):
        step = ops.cast(step, "float32")
        lr = self._rate(step)
        return _warmup(lr, step, self.learning_rate, self.warmup_steps)

    def get_config(self):
        names = inspect.signature(type(self)).parameters
        return {name: getattr(self, name) for name in names}


@keras.saving.register_keras_serializable(package="tfgraft")
class EpochDecay(_WarmupSchedule):
    """lr * gamma ** (number of boundaries passed), boundaries in steps.

    Args:
        learning_rate: initial rate.
        boundaries: increasing step counts at which the rate is multiplied
            by `gamma` (MultiStepLR milestones times steps per epoch).
        gamma: multiplicative factor.
        warmup_steps: linear warm-up from lr/warmup_steps to lr first.
    """

    def __init__(self, learning_rate, boundaries, gamma=0.1, warmup_steps=0):
        self.learning_rate = float(learning_rate)
        self.boundaries = [int(b) for b in boundaries]
        self.gamma = float(gamma)
        self.warmup_steps = int(warmup_steps)

    def _rate(self, step):
        passed = ops.zeros((), "float32")
        for b in self.boundaries:
            passed = passed + ops.cast(step >= b, "float32")
        return self.learning_rate * ops.power(self.gamma, passed)


@keras.saving.register_keras_serializable(package="tfgraft")
class StepDecay(_WarmupSchedule):
    """PyTorch StepLR: lr * gamma ** (step // step_size), no upper bound."""

    def __init__(self, learning_rate, step_size, gamma=0.1, warmup_steps=0):
        _check_positive("StepDecay", "step_size", step_size)
        self.learning_rate = float(learning_rate)
        self.step_size = int(step_size)
        self.gamma = float(gamma)
        self.warmup_steps = int(warmup_steps)

    def _rate(self, step):
        k = ops.floor(step / self.step_size)
        return self.learning_rate * ops.power(self.gamma, k)


@keras.saving.register_keras_serializable(package="tfgraft")
class CosineToZero(_WarmupSchedule):
    """Per-step cosine annealing lr * (1 + cos(pi * t / T)) / 2, eta_min 0.

    Matches `CosineAnnealingLR(T_max=total_steps)` stepped every iteration:
    the rate at step T (after the last update) is exactly 0 and stays 0.
    """

    def __init__(self, learning_rate, total_steps, warmup_steps=0):
        _check_positive("CosineToZero", "total_steps", total_steps)
        self.learning_rate = float(learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)

    def _rate(self, step):
        t = ops.minimum(step, float(self.total_steps))
        return (
            self.learning_rate
            * 0.5
            * (1.0 + ops.cos(math.pi * t / self.total_steps))
        )


@keras.saving.register_keras_serializable(package="tfgraft")
class ScaledSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Another schedule's rate times a constant factor.

    Args:
        schedule: a `LearningRateSchedule`.
        scale: the factor (> 0).
    """

    def __init__(self, schedule, scale):
        _check_positive("ScaledSchedule", "scale", scale)
        self.schedule = schedule
        self.scale = float(scale)

    def __call__(self, step):
        lr = self.schedule(step)
        return lr * ops.cast(self.scale, lr.dtype)

    def get_config(self):
        return {
            "schedule": keras.optimizers.schedules.serialize(self.schedule),
            "scale": self.scale,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = keras.optimizers.schedules.deserialize(
            config["schedule"]
        )
        return cls(**config)


def scale_learning_rate(learning_rate, scale):
    """A learning rate (float or schedule) times `scale`.

    A float is multiplied. tfgraft's own schedules are rebuilt with
    `learning_rate * scale`, which is what `make_schedule(scale=...)`
    builds, bit for bit; any other schedule is wrapped in
    `ScaledSchedule` (the same rates up to float rounding of the product's
    order).
    """
    if scale == 1.0:
        return learning_rate
    if isinstance(learning_rate, _WarmupSchedule):
        config = learning_rate.get_config()
        config["learning_rate"] = config["learning_rate"] * scale
        return type(learning_rate).from_config(config)
    base = keras.optimizers.schedules.LearningRateSchedule
    if isinstance(learning_rate, base):
        return ScaledSchedule(learning_rate, scale)
    return float(learning_rate) * scale


def _check_positive(owner, name, value):
    if not value > 0:
        raise ValueError(
            f"{owner} {name} must be > 0. Received: {name}={value}"
        )


def _warmup(lr, step, peak, warmup_steps):
    if not warmup_steps:
        return lr
    ramp = peak * (step + 1.0) / float(warmup_steps)
    return ops.where(step < warmup_steps, ops.minimum(ramp, lr), lr)


def make_schedule(optim: OptimConfig, steps_per_epoch, total_steps, scale=1.0):
    """Builds the schedule an `OptimConfig` describes, in optimizer steps.

    Args:
        optim: the optimizer configuration.
        steps_per_epoch: optimizer steps per epoch.
        total_steps: optimizer steps of the whole run (cosine's T).
        scale: factor on the initial rate (`scale_learning_rate` gives the
            same schedule).
    """
    lr = optim.learning_rate * scale
    warmup = int(round(optim.warmup_epochs * steps_per_epoch))
    if optim.schedule == "constant":
        return EpochDecay(lr, [], 1.0, warmup)
    if optim.schedule == "step":
        return StepDecay(
            lr, optim.step_epochs * steps_per_epoch, optim.gamma, warmup
        )
    if optim.schedule == "multistep":
        bounds = [int(round(m * steps_per_epoch)) for m in optim.milestones]
        return EpochDecay(lr, bounds, optim.gamma, warmup)
    return CosineToZero(lr, total_steps, warmup)
