"""What a study is: arms crossed with seeds, and the comparisons to make.

An arm is written `NAME: JOB ARGS...`, e.g.

    grafting: grafting --flagfile=configs/study_grafting_base.cfg --graft_every=epoch

JOB names an entry point (`python -m train.JOB`), ARGS are its flags
(shell-quoted). Inside ARGS, `{study}` stands for the study's workdir and
`{seed}` for the cell's seed, so an arm can start from another arm's
result, e.g. `--pretrained={study}/pretrain/seed_{seed}`; such an arm
depends on that cell, which runs first. Every cell gets `--seed=<seed>`
and `--workdir=<study>/<arm>/seed_<seed>` appended.

A comparison is written `A - B`, each side an arm or `arm/view` (views are
the rows a report yields besides the arm's own, e.g. `ensemble` or
`best_net`); it is paired by seed.
"""

import dataclasses
import os
import re
import shlex

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")


class StudyError(ValueError):
    """A study specification that cannot be run (one line)."""


@dataclasses.dataclass(frozen=True)
class Arm:
    name: str
    job: str
    args: tuple


@dataclasses.dataclass(frozen=True)
class Comparison:
    a: str  # "arm" or "arm/view"
    b: str

    @property
    def label(self):
        return f"{self.a} - {self.b}"


@dataclasses.dataclass(frozen=True)
class Cell:
    arm: Arm
    seed: int
    workdir: str
    argv: tuple  # the job's flags, workdir and seed included
    needs: tuple  # workdirs of the cells this one reads

    @property
    def key(self):
        return f"{self.arm.name}:{self.seed}"


def parse_arm(text, where="arm"):
    """`NAME: JOB ARGS...` -> `Arm`; `where` names the input in errors."""
    name, sep, rest = text.partition(":")
    name = name.strip()
    if not sep or not _NAME.match(name):
        raise StudyError(
            f"{where}={text!r}: expected 'NAME: JOB ARGS...' with NAME "
            "made of letters, digits, '_', '.', '-'"
        )
    try:
        words = shlex.split(rest)
    except ValueError as e:
        raise StudyError(f"{where}={text!r}: {e}") from None
    if not words or not _NAME.match(words[0]):
        raise StudyError(f"{where}={text!r}: no JOB after '{name}:'")
    for w in words[1:]:
        if w.startswith(("--seed=", "--workdir=")):
            raise StudyError(
                f"{where}={text!r}: {w.split('=')[0]} is set by the study "
                "for every cell"
            )
    return Arm(name=name, job=words[0], args=tuple(words[1:]))


def parse_comparison(text, arm_names, where="compare"):
    """`A - B` -> `Comparison`; both sides must name arms of the study."""
    parts = [p.strip() for p in text.split(" - ")]
    if len(parts) != 2 or not all(parts):
        raise StudyError(
            f"{where}={text!r}: expected 'A - B' (arms, or arm/view)"
        )
    for side in parts:
        if side.split("/")[0] not in arm_names:
            raise StudyError(
                f"{where}={text!r}: {side.split('/')[0]!r} is not an arm "
                f"of this study ({', '.join(arm_names)})"
            )
    return Comparison(*parts)


@dataclasses.dataclass(frozen=True)
class Study:
    workdir: str
    arms: tuple
    seeds: tuple
    comparisons: tuple = ()
    title: str = ""

    def __post_init__(self):
        names = [a.name for a in self.arms]
        if not names:
            raise StudyError("arm: a study needs at least one arm")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise StudyError(f"arm: {', '.join(dup)} defined twice")
        if not self.seeds:
            raise StudyError("seeds: a study needs at least one seed")
        bad = [s for s in self.seeds if s < 0]
        if bad or len(set(self.seeds)) != len(self.seeds):
            raise StudyError(
                f"seeds={','.join(map(str, self.seeds))}: must be distinct "
                "integers >= 0"
            )

    def arm(self, name):
        for a in self.arms:
            if a.name == name:
                return a
        raise StudyError(
            f"{name!r} is not an arm of this study "
            f"({', '.join(a.name for a in self.arms)})"
        )

    def cell_dir(self, arm_name, seed):
        return os.path.join(self.workdir, arm_name, f"seed_{seed}")

    def cell(self, arm, seed):
        """The cell of `arm` (an `Arm`) and `seed`, placeholders filled."""
        args = [
            a.replace("{study}", self.workdir).replace("{seed}", str(seed))
            for a in arm.args
        ]
        needs = []
        for other in self.arms:
            if other.name == arm.name:
                continue
            d = self.cell_dir(other.name, seed)
            if any(_mentions(a, d) for a in args):
                needs.append(d)
        workdir = self.cell_dir(arm.name, seed)
        argv = (*args, f"--seed={seed}", f"--workdir={workdir}")
        return Cell(arm, seed, workdir, argv, tuple(needs))

    def cells(self):
        """Every cell, seed-major (a seed's pairs finish together), arms in
        their listed order (an arm's dependencies are listed before it)."""
        out = [
            self.cell(arm, seed) for seed in self.seeds for arm in self.arms
        ]
        order = {c.workdir: i for i, c in enumerate(out)}
        for c in out:
            for d in c.needs:
                if order[d] > order[c.workdir]:
                    raise StudyError(
                        f"arm {c.arm.name}: reads {d}, an arm listed after "
                        "it; list the arm it reads first"
                    )
        return out

    def select(self, only):
        """The cell `ARM:SEED` names (the `--only` of the command line)."""
        name, _, seed = only.partition(":")
        try:
            seed = int(seed)  # no ':' leaves it empty
        except ValueError:
            raise StudyError(
                f"--only={only}: expected ARM:SEED, e.g. a:0"
            ) from None
        arm = self.arm(name)
        if seed not in self.seeds:
            raise StudyError(
                f"--only={only}: seed {seed} is not one of the study's "
                f"seeds ({','.join(map(str, self.seeds))})"
            )
        return self.cell(arm, seed)


def _mentions(arg, folder):
    """True if `arg` (a flag) names `folder` or a path inside it."""
    value = arg.split("=", 1)[-1]
    value = os.path.normpath(value) if value else value
    folder = os.path.normpath(folder)
    return value == folder or value.startswith(folder + os.sep)
