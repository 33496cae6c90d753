"""Trains one net of the model zoo on any dataset.

Example:

    python -m train.baseline --flagfile=configs/baseline_cifar10_resnet56.cfg \
        --workdir=runs/resnet56
"""

from . import flags as flags_lib

flags_lib.define_job("baseline")

if __name__ == "__main__":
    flags_lib.run_job("baseline")
