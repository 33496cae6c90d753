"""Stripe-wise pruning: train with a Filter Skeleton, prune, compact, export.

Examples:

    python -m train.stripe --flagfile=configs/stripe_quick.cfg
    python -m train.stripe --flagfile=configs/stripe_cifar10_resnet56.cfg \
        --workdir=runs/stripe_resnet56
"""

from . import flags as flags_lib

flags_lib.define_job("stripe")

if __name__ == "__main__":
    flags_lib.run_job("stripe")
