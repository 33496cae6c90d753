"""Exports one net of a finished (or interrupted) run as a SavedModel.

Example:

    python -m train.export --workdir=runs/quickstart --net=1 \
        --export_dir=/tmp/net1
"""

import importlib
import json
import os

from absl import flags

from tfgraft import config as cfg
from train import flags as flags_lib

# Job name (report.json / config) -> "module:Class".
JOBS = {
    "baseline": "tfgraft.training.job:Job",
    "grafting": "tfgraft.grafting.job:GraftingJob",
}

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder to export from.")
_NET = flags.DEFINE_integer("net", 0, "Index of the net to export.")
_EXPORT_DIR = flags.DEFINE_string(
    "export_dir", None, "Destination folder (must not exist)."
)
_JOB = flags.DEFINE_string(
    "job", None, "Job type of the run (default: read from job.json)."
)


def job_class(name):
    if name not in JOBS:
        raise cfg.ConfigError(
            f"--job={name}: unknown job; one of {', '.join(sorted(JOBS))}"
        )
    module, cls = JOBS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def main(argv):
    del argv
    workdir = _WORKDIR.value
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise cfg.ConfigError(
            f"--workdir={workdir}: no config.json (not a run)"
        )
    with open(path) as f:
        config = cfg.JobConfig.from_dict(json.load(f))
    name = _JOB.value
    if name is None:
        for record in ("job.json", "report.json"):
            path = os.path.join(workdir, record)
            if os.path.isfile(path):
                with open(path) as f:
                    name = json.load(f).get("job")
                break
    if name is None:
        raise cfg.ConfigError(
            f"--workdir={workdir}: no job.json or report.json; pass --job"
        )
    job = job_class(name)(config, workdir)
    out = job.export_from_checkpoint(_NET.value, _EXPORT_DIR.value)
    print(f"exported net {_NET.value} of {workdir} to {out}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["workdir", "export_dir"])
    flags_lib.run(main)
