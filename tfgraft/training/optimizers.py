"""PyTorch-style SGD with coupled (L2) weight decay, and per-net copies."""

import keras
from keras import ops

from tfgraft.training import schedules


@keras.saving.register_keras_serializable(package="tfgraft")
class TorchSGD(keras.optimizers.Optimizer):
    """SGD with momentum exactly as `torch.optim.SGD` computes it.

    PyTorch keeps the velocity free of the learning rate
    (`v <- mu * v + g; w <- w - lr * v`), while Keras folds the rate into the
    velocity; the two differ whenever the rate changes. Weight decay is
    *coupled*: `g <- g + weight_decay * w` before momentum, on every trainable
    variable (BN gamma/beta, biases, skeletons and latents included), as in
    the reference implementations (METHODS.md §0). Keras' own `weight_decay`
    argument is decoupled, so it is not used.

    Args:
        learning_rate: float or `keras.optimizers.schedules` schedule.
        momentum: momentum factor in [0, 1).
        nesterov: Nesterov momentum (`step = g + mu * v`).
        weight_decay: coupled L2 factor.
        **kwargs: base optimizer keyword arguments (`name`, ...).

    Reference:
        Sutskever et al., "On the importance of initialization and momentum
        in deep learning", ICML 2013 (the form PyTorch implements).
    """

    def __init__(
        self,
        learning_rate,
        momentum=0.9,
        nesterov=False,
        weight_decay=0.0,
        name="torch_sgd",
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(
                f"TorchSGD momentum must be in [0, 1). Received: "
                f"momentum={momentum}"
            )
        if weight_decay < 0:
            raise ValueError(
                f"TorchSGD weight_decay must be >= 0. Received: "
                f"weight_decay={weight_decay}"
            )
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.l2 = float(weight_decay)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = []
        if self.momentum:
            self.momentums = self.add_optimizer_variables(variables, "momentum")

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        g = ops.cast(gradient, variable.dtype)
        if self.l2:
            g = g + ops.cast(self.l2, variable.dtype) * variable
        if not self.momentum:
            self.assign_sub(variable, lr * g)
            return
        m = self.momentums[self._get_variable_index(variable)]
        mu = ops.cast(self.momentum, variable.dtype)
        new_m = mu * m + g
        self.assign(m, new_m)
        step = g + mu * new_m if self.nesterov else new_m
        self.assign_sub(variable, lr * step)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "nesterov": self.nesterov,
                "weight_decay": self.l2,
            }
        )
        return config


def per_net(template, scales, loss_scale=False):
    """Fresh copies `optimizer_<i>` of `template` (the jobs' and
    `GraftingModel`'s), each with its rate (float or schedule) times
    `scales[i]`; each in a `LossScaleOptimizer` under `loss_scale`, or
    with the template's scale settings if the template is in one."""
    opts = [_copy(template, s, f"optimizer_{i}") for i, s in enumerate(scales)]
    return loss_scaled(opts) if loss_scale else opts


def loss_scaled(opts):
    """`opts`, each in a `LossScaleOptimizer` unless it is one already."""
    return [
        o
        if isinstance(o, keras.optimizers.LossScaleOptimizer)
        else keras.optimizers.LossScaleOptimizer(o)
        for o in opts
    ]


def _copy(template, scale, name):
    inner = template
    if isinstance(template, keras.optimizers.LossScaleOptimizer):
        inner = template.inner_optimizer
    config = inner.get_config()
    lr = config["learning_rate"]
    if isinstance(lr, dict):
        lr = keras.optimizers.schedules.deserialize(lr)
    config["learning_rate"] = schedules.scale_learning_rate(lr, scale)
    config["name"] = name
    copy = type(inner).from_config(config)
    if inner is not template:
        copy = keras.optimizers.LossScaleOptimizer(
            copy,
            initial_scale=template.initial_scale,
            dynamic_growth_steps=template.dynamic_growth_steps,
        )
    return copy
