"""Exports one net of a finished (or interrupted) run as a SavedModel.

Works on the workdir of every job in `train.flags.JOBS` (the job is read
from job.json or report.json) and rebuilds, from the newest checkpoint,
what the job itself exports: net `--net` (baseline, grafting, L1 pruning),
the compact net of the stripe job's best net, EKG's fine-tuned
sub-network, LW-DNA's derived net (`derived/`). See each job's
`export_from_checkpoint`.

Example:

    python -m train.export --workdir=runs/quickstart --net=1 \
        --export_dir=/tmp/net1
"""

import os

from absl import flags

from tfgraft import config as cfg
from tfgraft.training import workdir as workdir_lib

from . import flags as flags_lib

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder to export from.")
_NET = flags.DEFINE_integer("net", 0, "Index of the net to export.")
_EXPORT_DIR = flags.DEFINE_string(
    "export_dir", None, "Destination folder (must not exist)."
)
_JOB = flags.DEFINE_string(
    "job", None, "Job type of the run (default: read from job.json)."
)


def main(argv):
    del argv
    workdir = _WORKDIR.value
    export_dir = _EXPORT_DIR.value
    # Checked first: nothing is built (or written) for a taken destination.
    if os.path.exists(export_dir):
        raise cfg.ConfigError(
            f"--export_dir={export_dir}: already exists; remove it or "
            "choose another"
        )
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise cfg.ConfigError(
            f"--workdir={workdir}: no config.json (not a run)"
        )
    try:
        config = cfg.JobConfig.from_dict(workdir_lib.read_json(path))
    except (TypeError, AttributeError) as e:
        raise cfg.ConfigError(f"{path}: not a tfgraft config ({e})") from None
    if not os.path.isfile(os.path.join(workdir, "data_info.json")):
        raise cfg.ConfigError(
            f"--workdir={workdir}: no data_info.json (the run never "
            "loaded its data)"
        )
    name = _JOB.value
    if name is None:
        for record in ("job.json", "report.json"):
            record = workdir_lib.read_json(os.path.join(workdir, record))
            if record is not None:
                name = record.get("job") if isinstance(record, dict) else None
                break
    if name is None:
        raise cfg.ConfigError(
            f"--workdir={workdir}: no job.json or report.json; pass --job"
        )
    job = flags_lib.job_class(name)(config)
    out = job.export_from_checkpoint(workdir, _NET.value, export_dir)
    print(f"exported net {_NET.value} of {workdir} to {out}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["workdir", "export_dir"])
    flags_lib.run(main)
