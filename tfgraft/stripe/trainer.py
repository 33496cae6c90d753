"""StripeTrainer: the per-step Filter Skeleton update inside the train step."""

import keras
import tensorflow as tf

from tfgraft.stripe import skeleton as skeleton_lib
from tfgraft.training import trainer as trainer_lib


def _index_of(variables, variable):
    for i, v in enumerate(variables):
        if v is variable:
            return i
    return None


class StripeTrainer(trainer_lib.Trainer):
    """`Trainer` that applies the reference's skeleton update every step.

    Between backward and `apply_gradients` (METHODS.md §2.2), for every
    pruned stripe conv of every net: the skeleton gradient gets
    `+ sr * sign(FS)`, skeleton entries with `|FS| <= threshold` and their
    gradients are zeroed, and the BN gamma/beta (and their gradients) of
    filters left without stripes are zeroed. The optimizer then applies
    coupled weight decay to the skeleton like to every trainable tensor, so
    the skeleton gets L2 *and* L1. Projection-shortcut skeletons train
    freely. The update runs only when both `sr` and `threshold` are > 0
    (the reference's `if args.sr and args.threshold`).

    Gradients are per replica here and summed by `apply_gradients`, so the
    L1 term is divided by the number of replicas (and multiplied by the
    loss scale under `mixed_float16`); masks are linear and need nothing.
    The assignments read mirrored values that are equal on every replica,
    so the replicas stay identical.

    Args:
        nets, optimizers, strategy: as `Trainer`.
        sr: L1 strength on the skeleton (the paper's alpha).
        threshold: skeleton magnitude at or below which a stripe is dead.
        **kwargs: further `Trainer` arguments.
    """

    def __init__(self, nets, optimizers, strategy, *, sr, threshold, **kwargs):
        if sr < 0:
            raise ValueError(f"--sr must be >= 0. Received: sr={sr}")
        if threshold < 0:
            raise ValueError(
                f"--threshold must be >= 0. Received: threshold={threshold}"
            )
        self.sr = float(sr)
        self.threshold = float(threshold)
        self.plans = [skeleton_lib.skeleton_plan(net) for net in nets]
        super().__init__(nets, optimizers, strategy, **kwargs)
        self._updates = [self._net_updates(i) for i in range(len(self.nets))]

    @property
    def active(self):
        return self.sr > 0 and self.threshold > 0

    def _net_updates(self, i):
        net = self.nets[i]
        trainable = net.trainable_variables
        updates = []
        for entry in self.plans[i].pruned:
            conv = net.get_layer(entry.name)
            fs = conv.filter_skeleton
            bn = []
            if entry.bn:
                layer = skeleton_lib.bn_layer(net, entry.bn)
                for var in (layer.gamma, layer.beta):
                    if var is not None:
                        bn.append((var, _index_of(trainable, var)))
            updates.append((fs, _index_of(trainable, fs), bn))
        return updates

    def transform_gradients(self, net_index, grads):
        if not self.active:
            return grads
        grads = list(grads)
        replicas = self.strategy.num_replicas_in_sync
        sr = tf.constant(self.sr / replicas, tf.float32)
        opt = self.optimizers[net_index]
        if isinstance(opt, keras.optimizers.LossScaleOptimizer):
            sr = sr * tf.cast(opt.dynamic_scale, tf.float32)
        for fs, fs_index, bn in self._updates[net_index]:
            grad = grads[fs_index] if fs_index is not None else None
            if grad is None:
                grad = tf.zeros_like(fs.value)
            new_fs, new_grad, alive = skeleton_lib.skeleton_update(
                fs.value, grad, sr, self.threshold
            )
            fs.assign(new_fs)
            if fs_index is not None:
                grads[fs_index] = new_grad
            for var, index in bn:
                keep = tf.cast(alive, var.dtype)
                var.assign(var.value * keep)
                if index is not None and grads[index] is not None:
                    grads[index] = grads[index] * tf.cast(
                        keep, grads[index].dtype
                    )
        return grads

    def kept_stripes(self, net_index=0):
        """`{layer: (kept stripes, stripes, alive filters, filters)}`."""
        net = self.nets[net_index]
        out = {}
        for entry in self.plans[net_index].pruned:
            mask = net.get_layer(entry.name).stripe_mask(self.threshold)
            out[entry.name] = (
                int(mask.sum()),
                int(mask.size),
                int(mask.any(axis=(0, 1)).sum()),
                int(mask.shape[-1]),
            )
        return out
