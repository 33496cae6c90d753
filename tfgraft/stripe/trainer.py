"""StripeTrainer: the per-step Filter Skeleton update inside the train step."""

import tensorflow as tf

from tfgraft import errors
from tfgraft.stripe import skeleton as skeleton_lib
from tfgraft.training import trainer as trainer_lib


class StripeTrainer(trainer_lib.Trainer):
    """`Trainer` that applies the reference's skeleton update every step.

    Between backward and `apply_gradients` (METHODS.md §2.2) every net's
    gradients go through its `skeleton.SkeletonUpdate` (the update
    `tfgraft.stripe.fit` runs under plain `model.fit`), with the L1 term
    divided by the replicas whose gradients `apply_gradients` sums. The
    optimizer then applies coupled weight decay to the skeleton like to
    every trainable tensor, so the skeleton gets L2 *and* L1. The
    assignments read mirrored values that are equal on every replica, so
    the replicas stay identical.

    Args:
        nets, optimizers, strategy: as `Trainer`.
        sr: L1 strength on the skeleton (the paper's alpha).
        threshold: skeleton magnitude at or below which a stripe is dead.
        steer_sr: keep `sr` in a non-trainable float32 variable
            (`sr_variable`, starting at `sr`, in the checkpoint) that the
            train step reads, so an epoch hook can change it
            (`tfgraft.stripe.job.SrSteeringHook`); off, `sr` is a constant
            of the traced step.
        **kwargs: further `Trainer` arguments.
    """

    def __init__(
        self, nets, optimizers, strategy, *, sr, threshold, steer_sr=False,
        **kwargs,
    ):
        for name, value in (("sr", sr), ("threshold", threshold)):
            if not value >= 0:
                raise errors.ArgumentError(
                    "StripeTrainer: {%s} must be >= 0" % name, **{name: value}
                )
        self.sr = float(sr)
        self.threshold = float(threshold)
        self.plans = [skeleton_lib.skeleton_plan(net) for net in nets]
        super().__init__(nets, optimizers, strategy, **kwargs)
        self.sr_variable = None
        if steer_sr:
            with self.strategy.scope():
                self.sr_variable = tf.Variable(
                    self.sr,
                    trainable=False,
                    dtype=tf.float32,
                    name="stripe_sr",
                )
        self._updates = [
            skeleton_lib.SkeletonUpdate(
                net,
                sr=self.sr,
                threshold=self.threshold,
                plan=plan,
                sr_variable=self.sr_variable,
            )
            for net, plan in zip(self.nets, self.plans)
        ]

    @property
    def active(self):
        return self.sr > 0 and self.threshold > 0

    def transform_gradients(self, net_index, grads):
        return self._updates[net_index].transform(
            self.nets[net_index].trainable_variables,
            grads,
            self.optimizers[net_index],
            self.strategy.num_replicas_in_sync,
        )

    def checkpoint_items(self):
        items = super().checkpoint_items()
        if self.sr_variable is not None:
            items["stripe_sr"] = self.sr_variable
        return items
