"""Runs a study: arms crossed with seeds, then its table, JSON and plot.

    python -m train.study --flagfile=configs/study_grafting.cfg
    python -m train.study --flagfile=configs/study_grafting.cfg --only=grafting:1
    python -m train.study --flagfile=configs/study_grafting.cfg --report_only

See `tfgraft/study/` and README "Studies".
"""

import importlib.util
import os
import sys

from absl import flags

from tfgraft.study import runner as runner_lib
from tfgraft.study import spec as spec_lib
from tfgraft.study import summary

from . import flags as flags_lib

# The cells run the entry points beside this one: `train.<job>` in a clone,
# `tfgraft.train.<job>` in an installed wheel.
_ENTRY_PACKAGE = __package__

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Study folder: one job workdir per cell, outputs."
)
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of every arm.")
_ARMS = flags.DEFINE_multi_string(
    "arm",
    [],
    "'NAME: JOB ARGS...' (repeat the flag per arm); {study} and {seed} in "
    "ARGS are filled per cell.",
)
_COMPARE = flags.DEFINE_multi_string(
    "compare", [], "'A - B': paired comparison of two arms (or arm/view)."
)
_TITLE = flags.DEFINE_string("title", "", "Title of study.md.")
_ONLY = flags.DEFINE_string(
    "only", None, "Run only this cell, ARM:SEED (then refresh the outputs)."
)
_REPORT_ONLY = flags.DEFINE_bool(
    "report_only", False, "Run nothing; write the outputs from what is done."
)


def make_study():
    """The `spec.Study` the flags describe (one-line errors)."""
    try:
        seeds = tuple(int(s) for s in _SEEDS.value)
    except ValueError:
        raise spec_lib.StudyError(
            f"--seeds={','.join(_SEEDS.value)}: must be integers"
        ) from None
    arms = tuple(
        spec_lib.parse_arm(text, where="--arm") for text in _ARMS.value
    )
    for arm in arms:
        if importlib.util.find_spec(f"{_ENTRY_PACKAGE}.{arm.job}") is None:
            raise spec_lib.StudyError(
                f"--arm={arm.name}: no job {_ENTRY_PACKAGE}.{arm.job}"
            )
    names = [a.name for a in arms]
    comparisons = tuple(
        spec_lib.parse_comparison(t, names, where="--compare")
        for t in _COMPARE.value
    )
    return spec_lib.Study(
        workdir=os.path.abspath(_WORKDIR.value),
        arms=arms,
        seeds=seeds,
        comparisons=comparisons,
        title=_TITLE.value,
    )


def main(argv):
    if len(argv) > 1:
        raise spec_lib.StudyError(f"unexpected arguments: {' '.join(argv[1:])}")
    study = make_study()
    failures = []
    if not _REPORT_ONLY.value:
        cells = study.cells()
        if _ONLY.value:
            cells = [study.select(_ONLY.value)]
        failures = runner_lib.Runner(
            study, module=f"{_ENTRY_PACKAGE}.{{job}}"
        ).run(cells)
    data = summary.collect(study)
    summary.write(study, data)
    done = sum(c["status"] == "done" for c in data["cells"])
    print(
        f"study: {done} of {len(data['cells'])} runs done; "
        f"{os.path.join(study.workdir, 'study.md')}",
        flush=True,
    )
    for cell, message in failures:
        print(f"error: {cell.key}: {message}", file=sys.stderr)
    if failures:
        sys.exit(1)


def _guarded(argv):
    try:
        main(argv)
    except spec_lib.StudyError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(
            "error: interrupted; run the same command again to resume",
            file=sys.stderr,
        )
        sys.exit(130)


if __name__ == "__main__":
    flags.mark_flags_as_required(["workdir"])
    from absl import app

    app.run(_guarded, flags_parser=flags_lib.parse)
