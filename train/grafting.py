"""Filter Grafting: N nets trained side by side in one process.

Example (the README's quick start):

    python -m train.grafting --flagfile=configs/quickstart.cfg
"""

from absl import flags

from tfgraft.grafting import job
from train import flags as flags_lib

COMMON, GRAFTING = flags_lib.define("common", "grafting")


def main(argv):
    if len(argv) > 1:
        raise flags.IllegalFlagValueError(
            f"unexpected arguments: {' '.join(argv[1:])}"
        )
    job.GraftingJob(
        flags_lib.job_config(),
        COMMON.workdir.value,
        flags_text=flags_lib.flags_text(),
    ).run()


if __name__ == "__main__":
    flags.mark_flags_as_required(["workdir"])
    flags_lib.run(main)
