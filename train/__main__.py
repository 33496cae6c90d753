"""`tfgraft-train <job> [flags]`: runs the entry point `<job>` of this package.

The command an installed tfgraft provides; the same as `python -m
tfgraft.train.<job> [flags]` installed, or `python -m train <job> [flags]`
(= `python -m train.<job> [flags]`) in a clone:

    tfgraft-train grafting --recipe=quickstart --workdir=runs/quickstart
"""

import os
import runpy
import sys


def jobs():
    """The entry points beside this file (`grafting`, `stripe`, ...)."""
    here = os.path.dirname(os.path.abspath(__file__))
    return sorted(
        name[: -len(".py")]
        for name in os.listdir(here)
        if name.endswith(".py")
        and name not in ("__init__.py", "__main__.py", "flags.py", "startup.py")
    )


def main(argv=None):
    argv = list(sys.argv if argv is None else argv)
    names = jobs()
    usage = (
        "usage: tfgraft-train <job> [--flag=value ...], <job> one of "
        f"{', '.join(names)}; `tfgraft-train <job> --help` lists its flags"
    )
    if len(argv) > 1 and argv[1] in ("-h", "--help", "help"):
        print(usage)
        return
    if len(argv) < 2 or argv[1] not in names:
        given = f"unknown job '{argv[1]}'" if len(argv) > 1 else "no job"
        print(f"error: {given}; {usage}", file=sys.stderr)
        sys.exit(2)
    module = f"{__package__}.{argv[1]}"
    sys.argv = [module, *argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
