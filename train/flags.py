"""Every absl flag of tfgraft's jobs, made from `tfgraft.config`'s knobs.

Flags are grouped; each entry point defines the groups it accepts
(`define("common", "grafting")`), so a flag that a job does not understand
is an error there. A group holds config sections, whose knobs become its
flags, and the few flags that are no knob (`_OWN_FLAGS`). `job_config()`
turns the flags into the sections, which check their values.
"""

import dataclasses
import glob
import importlib
import os
import re
import sys

from absl import app
from absl import flags

from tfgraft import config as cfg
from tfgraft import errors

FLAGS = flags.FLAGS

# The flags that are no config knob: where a job runs, how it resumes,
# and an alias.
_OWN_FLAGS = {
    "workdir": (
        flags.DEFINE_string,
        None,
        "Run folder: checkpoints, summaries, report, export.",
    ),
    "force_resume": (
        flags.DEFINE_bool,
        False,
        "Resume a --workdir whose run was started with other training "
        "settings (learning rate, schedule, augmentation, seed, batch "
        "size, method constants); recorded in invocations.json. Never "
        "allowed for what the checkpoints hold (job, model, widths, "
        "dataset, precision, number of nets, search settings).",
    ),
    "cos": (
        flags.DEFINE_bool,
        False,
        "Per-step cosine annealing (same as --schedule=cosine).",
    ),
}

# Each group's flags in `flags.cfg` order: a config section type defines
# the knobs it declares itself (`Pretraining`'s are the "pretrained"
# group's, shared by the EKG and L1 jobs), a name one of `_OWN_FLAGS`.
_GROUP_FLAGS = {
    "common": (
        "workdir",
        cfg.RunConfig,
        "force_resume",
        cfg.DataConfig,
        cfg.ModelConfig,
        cfg.OptimConfig,
    ),
    "grafting": (cfg.GraftConfig, "cos"),
    "lwdna": (cfg.LWDNAConfig,),
    "pretrained": (cfg.Pretraining,),
    "ekg": (cfg.EKGConfig,),
    "stripe": (cfg.StripeConfig,),
    "l1prune": (cfg.L1PruneConfig,),
}

# The groups defined on each FlagValues (tests use fresh ones), by id; the
# FlagValues is kept so that its id is not reused.
_DEFINED = {}

_DEFINE = {
    "bool": flags.DEFINE_bool,
    "int": flags.DEFINE_integer,
    "float": flags.DEFINE_float,
    "str": flags.DEFINE_string,
    "enum": flags.DEFINE_enum,
    "list": flags.DEFINE_list,
}

# Read before TensorFlow loads (train/startup.py); not a run setting, so
# not written to flags.cfg.
TF_LOG = flags.DEFINE_bool(
    "tf_log",
    False,
    "Show TensorFlow's own log: its C++ start-up lines (oneDNN, CUDA), "
    "C++ INFO/WARNING records (unless TF_CPP_MIN_LOG_LEVEL is set) and "
    "the INFO records of its Python modules. Off: the console shows "
    "tfgraft's lines, warnings and errors only.",
)
_NOT_RECORDED = {"tf_log"}


def _flag_word(field, value):
    """A knob's value as its flag says it: its word, if one stands for it."""
    words = {v: word for word, v in (cfg.spec(field).words or {}).items()}
    return words.get(value, value)


def _define_knob(field, fv):
    """Defines the flag of one `tfgraft.config.knob` field."""
    knob, kind, default = cfg.spec(field), cfg.flag_kind(field), field.default
    if knob.words:
        default, kind = str(_flag_word(field, default)), "str"
    if kind == "list":
        default = [str(v) for v in default]
    choices = (list(knob.choices),) if kind == "enum" else ()
    _DEFINE[kind](
        cfg.flag_name(field), default, *choices, knob.help, flag_values=fv
    )


def define_knobs(section_type, names=None, flag_values=FLAGS):
    """Defines the flags of a section's own knobs (or of those `names`).

    Inherited knobs (`Pretraining`'s) are their own group's. Returns the
    names of the flags defined.
    """
    own = section_type.__dict__.get("__annotations__", {})
    defined = []
    for field in dataclasses.fields(section_type):
        if field.name in own and (names is None or field.name in names):
            _define_knob(field, flag_values)
            defined.append(cfg.flag_name(field))
    return defined


def define(*names, flag_values=FLAGS):
    """Defines the named flag groups, each once per FlagValues."""
    defined = _DEFINED.setdefault(id(flag_values), (flag_values, set()))[1]
    for name in names:
        if name in defined:
            continue
        defined.add(name)
        for entry in _GROUP_FLAGS[name]:
            if isinstance(entry, str):
                define_flag, default, help_text = _OWN_FLAGS[entry]
                define_flag(entry, default, help_text, flag_values=flag_values)
            else:
                define_knobs(entry, flag_values=flag_values)


# Every training job, once: its flag groups and its class as "module:Class"
# (`train.export` rebuilds a workdir's net with it; the name is the `job` of
# its job.json and report.json). A job class is made from the `JobConfig`
# and has `name`, `config`, `run(workdir, ...)` and
# `export_from_checkpoint(workdir, ...)`.
JOBS = {
    "baseline": (("common",), "tfgraft.experiment:Method"),
    "grafting": (("common", "grafting"), "tfgraft.grafting.job:Grafting"),
    "stripe": (("common", "stripe"), "tfgraft.stripe.job:Stripe"),
    "ekg": (("common", "pretrained", "ekg"), "tfgraft.ekg.job:EKG"),
    "lwdna": (("common", "lwdna"), "tfgraft.lwdna.job:LWDNA"),
    "l1prune": (
        ("common", "pretrained", "l1prune"),
        "tfgraft.l1prune.job:L1Prune",
    ),
}
JOB_GROUPS = {name: groups for name, (groups, _) in JOBS.items()}


def job_class(name):
    """The job class `JOBS` names for `name` (imported on first use)."""
    if name not in JOBS:
        raise cfg.ConfigError(
            f"--job={name}: unknown job; one of {', '.join(sorted(JOBS))}"
        )
    module, cls = JOBS[name][1].split(":")
    return getattr(importlib.import_module(module), cls)


def _word_or_steps(flag, value, words):
    """A flag value that is one of `words` or a positive integer."""
    if value in words:
        return words[value]
    try:
        steps = int(value)
    except ValueError:
        allowed = ", ".join(f"'{w}'" for w in words)
        raise cfg.ConfigError(
            f"--{flag}={value}: must be {allowed} or a positive integer"
        ) from None
    if steps <= 0:
        raise cfg.ConfigError(f"--{flag}={value}: must be > 0")
    return steps


def _knob_value(field, fv):
    """The config value of a knob's flag."""
    flag, words = cfg.flag_name(field), cfg.spec(field).words
    value = fv[flag].value
    if words:
        return _word_or_steps(flag, value, words)
    if cfg.flag_kind(field) == "list":
        try:
            return tuple(float(v) for v in value)
        except ValueError:
            raise cfg.ConfigError(
                f"--{flag}={','.join(value)}: must be numbers"
            ) from None
    return value


def job_config(flag_values=FLAGS):
    """Builds the `JobConfig` the defined flags describe.

    A section is built when its type's group is defined, from the flags of
    all its knobs (the EKG section's `pretrain*` ones included).
    """
    groups = _DEFINED[id(flag_values)][1]
    defined = {entry for group in groups for entry in _GROUP_FLAGS[group]}
    return cfg.JobConfig(
        **{
            name: section_from_flags(section_type, flag_values)
            for name, section_type in cfg.section_types().items()
            if section_type in defined
        }
    )


def section_from_flags(section_type, flag_values=FLAGS):
    """A config section from the flags of those of its knobs defined.

    Knobs without a defined flag keep their defaults; `--cos` sets
    `schedule` (an alias of `--schedule=cosine`).
    """
    values = {
        field.name: _knob_value(field, flag_values)
        for field in dataclasses.fields(section_type)
        if cfg.flag_name(field) in flag_values
    }
    cos = "cos" in flag_values and flag_values["cos"].value
    if "schedule" in values and cos:
        values["schedule"] = "cosine"
    return section_type(**values)


def flags_text(flag_values=FLAGS):
    """The resolved tfgraft flags as flagfile text (a valid flagfile)."""
    lines = ["# Resolved flags of this run; reusable as --flagfile."]
    for flag in flag_values.get_flags_for_module(__name__):
        if flag.value is None or flag.name in _NOT_RECORDED:
            continue
        serialized = flag.serialize()
        if serialized:
            lines.append(serialized)
    return "\n".join(lines) + "\n"


_FLAGFILE = re.compile(r"^--flagfile=(.+)$")
_DIRECTIVE = re.compile(r"^--?(flagfile|recipe)(?:=(.*))?$")
_HELP = re.compile(r"^--?(\?|help|helpshort|helpfull|helpxml)(=.*)?$")

# The recipes shipped with tfgraft: the `configs` folder beside the folder
# of this package, which is `<clone>/configs` next to `<clone>/train` in a
# clone and `tfgraft/configs` next to `tfgraft/train` in an installed wheel
# (pyproject.toml maps both there).
RECIPES_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs"
)


def recipe_path(name):
    """The shipped recipe `name` (`quickstart` or `quickstart.cfg`)."""
    base = name[: -len(".cfg")] if name.endswith(".cfg") else name
    path = os.path.join(RECIPES_DIR, base + ".cfg")
    if os.sep in base or "/" in base or not os.path.isfile(path):
        raise cfg.ConfigError(
            f"--recipe={name}: no such recipe in {RECIPES_DIR} (the name of "
            "one of its .cfg files, e.g. --recipe=quickstart)"
        )
    return path


def resolve_flagfile(path):
    """Where `--flagfile=path` is read from, or None if nowhere.

    As absl does, `path` is read relative to the current directory. If no
    such file exists and `path` is `configs/<name>.cfg` or `<name>.cfg`,
    the recipe of that name shipped with tfgraft is read instead, so the
    README's commands (and recipes that include `configs/<base>.cfg`) work
    from any directory after `pip install tfgraft`.
    """
    path = os.path.expanduser(path)
    if os.path.isfile(path):
        return path
    head, name = os.path.split(os.path.normpath(path))
    if not os.path.isabs(path) and head in ("", "configs"):
        shipped = os.path.join(RECIPES_DIR, name)
        if os.path.isfile(shipped):
            return shipped
    return None


def _flagfile_lines(path, where, stack):
    """The flag lines of the flagfile `path`, nested flagfiles expanded."""
    resolved = resolve_flagfile(path)
    if resolved is None:
        raise cfg.ConfigError(f"{where}--flagfile={path}: no such file")
    key = os.path.realpath(resolved)
    if key in stack:
        raise cfg.ConfigError(
            f"{where}--flagfile={path}: includes itself (through "
            f"{' -> '.join(stack + [key])})"
        )
    lines = []
    with open(resolved) as f:
        for number, line in enumerate(f, 1):
            text = line.strip()
            if not text or text.startswith(("#", "//")):
                continue
            nested = _FLAGFILE.match(text)
            if nested:
                lines.extend(
                    _flagfile_lines(
                        nested.group(1), f"{path}:{number}: ", stack + [key]
                    )
                )
                continue
            if re.search(r"\s#", text):
                raise cfg.ConfigError(
                    f"{path}:{number}: trailing comment in '{text}'; "
                    "put comments on their own '#' line"
                )
            lines.append(text)
    return lines


def expand_flagfiles(args):
    """`args` with every flagfile and recipe replaced by its flag lines.

    What absl does with `--flagfile=` (each one replaced in place by its
    lines, nested ones too; comment and blank lines dropped; flags after it
    override it), with tfgraft's path rule (`resolve_flagfile`) and checks:
    a trailing `# comment` (absl would keep it as part of the value), a
    missing file and a flagfile that includes itself stop with one line
    naming the file and line. `--recipe=NAME` is short for the shipped
    `--flagfile=configs/NAME.cfg`. Arguments after `--` are left alone.

    Args:
        args: the command-line arguments, without the program name.

    Returns:
        The arguments absl then parses (they hold no flagfile).
    """
    out = []
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "--":
            out.append(arg)
            out.extend(rest)
            break
        match = _DIRECTIVE.match(arg)
        if not match:
            out.append(arg)
            continue
        kind, value = match.groups()
        if value is None:  # --flagfile PATH
            if not rest:
                raise cfg.ConfigError(f"--{kind}: needs a value")
            value = rest.pop(0)
        if kind == "recipe":
            value = recipe_path(value)
        out.extend(_flagfile_lines(value, "", []))
    return out


def check_flagfiles(argv):
    """The checks of `expand_flagfiles` alone (its result unused)."""
    expand_flagfiles(argv)


def user_errors():
    """Exception types reported as one line (no traceback) by `run`.

    `errors.ArgumentError` is the base of every library error that names
    its arguments (data, models, each method's own).
    """
    from tfgraft import export
    from tfgraft import io
    from tfgraft import pretrained
    from tfgraft.training import loop

    return (
        errors.ArgumentError,
        pretrained.PretrainedError,
        cfg.ConfigError,
        export.ExportError,
        io.WriteError,
        loop.CheckpointError,
        loop.NonFiniteError,
        FileExistsError,
        PermissionError,
        flags.IllegalFlagValueError,
    )


def job_main(job_class, flag_values=FLAGS):
    """The `main(argv)` of a training entry point running `job_class`.

    A workdir that holds another run stops with one line in flag names;
    Ctrl-C exits with 130 and one line naming the last checkpoint.
    """

    def main(argv):
        from tfgraft.training import workdir as workdir_lib

        if len(argv) > 1:
            raise flags.IllegalFlagValueError(
                f"unexpected arguments: {' '.join(argv[1:])}"
            )
        try:
            job_class(job_config(flag_values)).run(
                flag_values["workdir"].value,
                flags_text=flags_text(flag_values),
                force_resume=flag_values["force_resume"].value,
            )
        except workdir_lib.WorkdirMismatchError as e:
            raise cfg.ConfigError(mismatch_message(e)) from None
        except KeyboardInterrupt:
            _exit_interrupted(flag_values["workdir"].value)

    return main


def field_flag(dotted):
    """The flag of a dotted `JobConfig` field (`graft.c` -> `graft_c`)."""
    return cfg.flag_name(cfg.field_of(dotted))


def _flag_setting(field, value):
    if "." not in field:  # a whole section, present on one side only
        return f"{'no ' if value is None else ''}--{field} settings"
    if value is None:
        return f"no --{field_flag(field)}"
    value = errors.flag_value(_flag_word(cfg.field_of(field), value))
    return f"--{field_flag(field)}={value}"


def _entry_name(job):
    return f"train.{job}" if job in JOB_GROUPS else job


def mismatch_message(error):
    """A `WorkdirMismatchError` as one line in flag names."""
    workdir = f"--workdir={error.workdir}"
    diffs = error.differences
    if diffs[0].field == "job":
        return (
            f"{workdir} holds a {_entry_name(diffs[0].recorded)} run, this "
            f"command is {_entry_name(diffs[0].current)}; use a new --workdir"
        )
    held = " ".join(_flag_setting(d.field, d.recorded) for d in diffs)
    now = " ".join(_flag_setting(d.field, d.current) for d in diffs)
    text = (
        f"{workdir} holds a run with {held}, this command has {now}; use a "
        "new --workdir"
    )
    if all(d.kind == "recipe" for d in diffs):
        text += " (or --force_resume to continue it with the new values)"
    elif error.force_resume:
        text += " (--force_resume cannot change what the checkpoints hold)"
    return text


def _exit_interrupted(workdir):
    """Ctrl-C: one line naming the newest checkpoint; exits with 130."""
    import tensorflow as tf

    folders = [os.path.join(workdir, "checkpoints")] + sorted(
        glob.glob(os.path.join(workdir, "*", "checkpoints"))
    )
    # The newest of the job's checkpoints (multi-phase jobs keep theirs in
    # sub-folders such as derived/ or pretrain/).
    paths = [tf.train.latest_checkpoint(f) for f in folders]
    paths = [p for p in paths if p]
    if paths:
        last = max(paths, key=lambda p: os.path.getmtime(p + ".index"))
        where = f"last checkpoint: {last}"
    else:
        where = "no checkpoint yet"
    print(
        f"error: interrupted; {where}; run the same command again to resume",
        file=sys.stderr,
    )
    sys.exit(130)


def define_job(name, flag_values=FLAGS):
    """Defines the flag groups `JOBS` lists for the job `name`.

    A training entry point calls it at import, so `--helpfull` and the
    flagfile checks see the job's flags before `run_job`.
    """
    define(*JOB_GROUPS[name], flag_values=flag_values)


def run_job(name):
    """Runs the training job `name`: flags -> `JobConfig` -> its class.

    Its flag groups must be defined (`define_job`); `--workdir` is
    required.
    """
    flags.mark_flags_as_required(["workdir"])
    run(job_main(job_class(name)))


def flag_message(error):
    """`error`'s message in flag words (`tfgraft.errors` says how)."""
    if not isinstance(error, errors.ArgumentError):
        return str(error)

    def flag_of(argument):
        if argument in _OWN_FLAGS:
            return argument
        return cfg.argument_flag(argument)

    return error.render(flag_of)


def _exit_with(error):
    """Prints `error: <flag_message>` as one line on stderr; exits with 2."""
    lines = [x.strip() for x in flag_message(error).splitlines() if x.strip()]
    message = "; ".join(lines) or type(error).__name__
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def parse(argv, flag_values=FLAGS):
    """Parses `argv` as `app.run` does, but fails with one line (exit 2).

    Expands the flagfiles first (`expand_flagfiles`); unknown flags, values
    of the wrong type and missing required flags are reported as
    `error: <message naming the flag>` instead of absl's usage text.
    Returns the remaining arguments (program name first).
    """
    try:
        return flag_values(argv[:1] + expand_flagfiles(argv[1:]))
    except (cfg.ConfigError, flags.Error) as e:
        _exit_with(e)
    except SystemExit as e:
        # absl's --help/--helpfull/--helpshort/--helpxml print the help and
        # exit with 1; asking for help is a success.
        if e.code == 1 and any(_HELP.match(a) for a in argv[1:]):
            sys.exit(0)
        raise


def guard(main):
    """Wraps `main(argv)`: a `user_errors()` exception exits with one line."""

    def guarded(argv):
        from tfgraft import io

        from . import startup

        startup.configure_logging(TF_LOG.value)
        try:
            return main(argv)
        except user_errors() as e:
            _exit_with(e)
        except OSError as e:
            # Whatever the file system refused (an unreadable file, a
            # symlink loop, a full disk) is the environment, not a bug:
            # one line naming the path.
            _exit_with(io.os_error_line(e.filename or "(no path)", e))

    return guarded


def run(main):
    """`app.run(main)` with flagfile checks and one-line user errors."""
    app.run(guard(main), flags_parser=parse)
