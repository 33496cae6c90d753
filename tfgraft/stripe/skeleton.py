"""Which layers the Filter Skeleton update touches, and its pure math.

The reference (METHODS.md §2.2) applies, after every backward pass and
before the optimizer step, an L1 subgradient and a hard threshold to the
skeleton of every stripe conv except the projection shortcuts, and zeroes
the BN gamma/beta of filters left without stripes -- for VGG every BN, for
ResNet-56 only the BN inside each block. `skeleton_plan` derives the same
sets from the channel-dependency graph instead of layer names: a conv's
dead filters can be *removed* when its output channels form a prunable,
non-residual group that only this conv writes and only convs/dense layers
read (plus its BN); those are exactly the convs whose BN gets masked. Convs
writing a residual stream (ResNet stem, block conv2) are stripe-pruned but
keep all their filters.
"""

import dataclasses

import keras
import tensorflow as tf

from tfgraft import errors
from tfgraft import graph as graph_lib
from tfgraft.layers.stripe_conv import StripeConv2D


class StripePruningError(errors.ArgumentError):
    """A model cannot be stripe-pruned as asked; the message names why."""


@dataclasses.dataclass(frozen=True)
class PrunedConv:
    """A stripe conv under the L1 + threshold update.

    Attributes:
        name: the `StripeConv2D` layer name.
        bn: the BN whose gamma/beta follow the conv's surviving filters
            (set only when `removable`).
        removable: whether filters without stripes are physically removed
            at compaction (with their BN channels and the readers' inputs).
    """

    name: str
    bn: str | None
    removable: bool


@dataclasses.dataclass(frozen=True)
class SkeletonPlan:
    """The stripe convs of a model, split by how the method treats them.

    Layers are named as in that model: a plan belongs to the model it was
    made for (another model built by the same function may carry other,
    auto-generated names; make its own plan).

    Attributes:
        pruned: `PrunedConv`s (L1 + threshold), in topological order.
        free: names of stripe convs whose skeleton trains freely and which
            are never compacted (projection shortcuts, as the reference's
            `downsample`).
    """

    pruned: tuple[PrunedConv, ...]
    free: tuple[str, ...]

    def names(self):
        return [p.name for p in self.pruned]


def skeleton_plan(model, graph=None):
    """Finds the stripe convs of `model` and how each is pruned.

    Args:
        model: a functional Keras model containing `StripeConv2D` layers.
        graph: its `tfgraft.graph.ChannelGraph` if already computed.

    Returns:
        A `SkeletonPlan`.

    Raises:
        StripePruningError: the model has no `StripeConv2D` layer.
    """
    graph = graph or graph_lib.analyze(model)
    layers = {layer.name: layer for layer in model.layers}
    pruned, free = [], []
    for node in graph.convs():
        layer = layers.get(node.name)
        if not isinstance(layer, StripeConv2D):
            continue
        if node.is_shortcut:
            free.append(node.name)
            continue
        removable = _removable(graph, layers, node)
        pruned.append(
            PrunedConv(
                name=node.name,
                bn=node.bn if removable else None,
                removable=removable,
            )
        )
    if not pruned and not free:
        raise StripePruningError(
            f"Model '{model.name}' has no StripeConv2D layer; build it with "
            "conv_layer=tfgraft.layers.StripeConv2D."
        )
    return SkeletonPlan(tuple(pruned), tuple(free))


def _removable(graph, layers, node):
    group = graph.groups[node.out_group]
    if not group.prunable or group.residual or group.producers != (node.name,):
        return False
    for consumer in group.consumers:
        kind = graph.nodes[consumer].kind
        layer = layers[consumer]
        if kind == "dense":
            continue
        if kind != "conv" or getattr(layer, "groups", 1) != 1:
            return False
    allowed = {node.name, node.bn, *group.consumers}
    for name, (g_in, g_out) in graph.layer_groups.items():
        if node.out_group not in (g_in, g_out) or name in allowed:
            continue
        if name in graph.weighted:
            return False  # a weighted layer we would not know how to slice
    return True


def skeleton_update(skeleton, grad, sr, threshold):
    """One step of the reference's `update_skeleton` (pure).

    `grad += sr * sign(FS)`; `mask = |FS| > threshold` (FS from before
    this step's update); `FS *= mask`; `grad *= mask`.

    Args:
        skeleton: `(kh, kw, filters)` skeleton values.
        grad: its gradient.
        sr: L1 strength (already divided by the replicas whose gradients
            are summed afterwards, and multiplied by any loss scale).
        threshold: stripes with `|FS| <= threshold` are zeroed.

    Returns:
        `(new_skeleton, new_grad, alive)` with `alive` a `(filters,)` bool
        vector: whether a filter keeps any stripe.
    """
    skeleton = tf.convert_to_tensor(skeleton)
    grad = tf.convert_to_tensor(grad)
    sr = tf.cast(sr, grad.dtype)
    grad = grad + sr * tf.cast(tf.sign(skeleton), grad.dtype)
    keep = tf.abs(skeleton) > tf.cast(threshold, skeleton.dtype)
    mask = tf.cast(keep, skeleton.dtype)
    alive = tf.reduce_any(keep, axis=[0, 1])
    return skeleton * mask, grad * tf.cast(mask, grad.dtype), alive


class SkeletonUpdate:
    """The per-step skeleton update of one model, wired to its variables.

    The one implementation behind `StripeTrainer.transform_gradients` and
    the optimizer `tfgraft.stripe.fit.StripeModel` installs for
    `model.fit`: between backward and the optimizer step, for every pruned
    stripe conv of `plan` in order, `skeleton_update` (L1 subgradient and
    the hard threshold on the pre-update skeleton) assigns the masked
    skeleton and replaces its gradient, then the BN gamma/beta of filters
    left without stripes, and their gradients, are zeroed. Projection
    shortcuts (`plan.free`) are not touched. Nothing happens unless both
    `sr` and `threshold` are > 0 (the reference's
    `if args.sr and args.threshold`).

    Args:
        model: the functional model holding the stripe convs.
        sr: L1 strength on the skeleton (the paper's alpha), >= 0.
        threshold: skeleton magnitude at or below which a stripe is dead.
        plan: `skeleton_plan(model)` if already computed.
        sr_variable: optional scalar float32 `tf.Variable` read at every
            step instead of the constant `sr` (so `sr` can change between
            steps without retracing: `--steer_sr`); whether the update
            runs is still decided by `sr` (the starting value) and
            `threshold`.
    """

    def __init__(self, model, *, sr, threshold, plan=None, sr_variable=None):
        self.sr = float(sr)
        self.sr_variable = sr_variable
        self.threshold = float(threshold)
        self.plan = plan or skeleton_plan(model)
        self._targets = tuple(
            (
                model.get_layer(entry.name).filter_skeleton,
                bn_variables(model, entry.bn) if entry.bn else (),
            )
            for entry in self.plan.pruned
        )

    @property
    def active(self):
        return self.sr > 0 and self.threshold > 0

    def transform(self, variables, grads, optimizer, replicas):
        """Applies the update; returns the new gradients (replica context).

        Args:
            variables: the trainable variables `grads` belong to.
            grads: their gradients (entries may be None), per replica.
            optimizer: the optimizer that applies them; a
                `LossScaleOptimizer` means `grads` are scaled by its
                dynamic scale, and so is the L1 term.
            replicas: replicas whose gradients the optimizer sums; the L1
                term is divided by it (the masks are linear and need
                nothing).

        Returns:
            The list of gradients to apply.
        """
        if not self.active:
            return grads
        grads = list(grads)
        index = {id(v): i for i, v in enumerate(variables)}
        if self.sr_variable is None:
            sr = tf.constant(self.sr / replicas, tf.float32)
        else:
            sr = tf.cast(self.sr_variable, tf.float32) / replicas
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            sr = sr * tf.cast(optimizer.dynamic_scale, tf.float32)
        for fs, bn in self._targets:
            fs_index = index.get(id(fs))
            grad = grads[fs_index] if fs_index is not None else None
            if grad is None:
                grad = tf.zeros_like(fs.value)
            new_fs, new_grad, alive = skeleton_update(
                fs.value, grad, sr, self.threshold
            )
            fs.assign(new_fs)
            if fs_index is not None:
                grads[fs_index] = new_grad
            for var in bn:
                keep = tf.cast(alive, var.dtype)
                var.assign(var.value * keep)
                i = index.get(id(var))
                if i is not None and grads[i] is not None:
                    grads[i] = grads[i] * tf.cast(keep, grads[i].dtype)
        return grads


def bn_variables(model, name):
    """The gamma and beta (where the layer has them) of BN layer `name`."""
    layer = model.get_layer(name)
    if not isinstance(layer, keras.layers.BatchNormalization):
        raise StripePruningError(
            f"Layer '{name}' of model '{model.name}' is not a BN."
        )
    return tuple(v for v in (layer.gamma, layer.beta) if v is not None)
