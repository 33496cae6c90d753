"""Trains one net of the model zoo on any dataset.

Example:

    python -m train.baseline --flagfile=configs/baseline_cifar10_resnet56.cfg \
        --workdir=runs/resnet56
"""

from absl import flags

from tfgraft.training import job
from train import flags as flags_lib

COMMON = flags_lib.define("common")


def main(argv):
    if len(argv) > 1:
        raise flags.IllegalFlagValueError(
            f"unexpected arguments: {' '.join(argv[1:])}"
        )
    job.Job(
        flags_lib.job_config(),
        COMMON.workdir.value,
        flags_text=flags_lib.flags_text(),
    ).run()


if __name__ == "__main__":
    flags.mark_flags_as_required(["workdir"])
    flags_lib.run(main)
