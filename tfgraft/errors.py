"""Errors that name the Python arguments at fault, in either vocabulary.

The library speaks Python: a bad value is named as the caller wrote it,
`threshold=0.5`, never as a command-line flag. The command line shows the
same error in its own words, `--threshold=0.5`. One message serves both:
an `ArgumentError` keeps its message as a template whose `{name}` fields
are the arguments it names, plus their values, and renders it either way.

* `{name}` is the argument and its value: `name=value` in Python,
  `--flag=value` on the command line.
* `{name!n}` is the bare name: `name` in Python, `--flag` on the
  command line (advice such as "lower {sr!n}").

`str(error)` is the Python message. `train/flags.py` (the only code that
knows flags) prints `error.render(flag_of)`, where `flag_of(argument)`
says which flag feeds that argument. By default the config declarations
say it (`tfgraft.config.argument_flag`: the knob flag of the same name, or
the flag of the knob field of that name); a job that passes a config field
under another name (`search_subnet(batch_size=config.ekg.batch_size)`)
says so around the call with `flag_names(batch_size="ekg_batch_size")`,
the translation kept at the call site that knows it. An argument no flag
feeds keeps its Python spelling on the command line too.

Example:

>>> e = ArgumentError("{sr}: must be >= 0", sr=-0.1)
>>> str(e)
'sr=-0.1: must be >= 0'
>>> e.render(lambda name: name)
'--sr=-0.1: must be >= 0'
"""

import contextlib
import re

# `{name}` or `{name!n}`; other braces in a message are left alone.
_FIELD = re.compile(r"\{([A-Za-z_]\w*)(!n)?\}")


def python_value(value):
    """A value as a Python caller would write it (`'a'`, `0.5`, `(1, 2)`)."""
    return repr(value) if isinstance(value, str) else str(value)


def flag_value(value):
    """A value as its flag would be written (`1.0,2.0`, `true`)."""
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


class ArgumentError(ValueError):
    """A bad argument value; the message names the argument (and layer).

    Args:
        template: the message; `{name}` fields are the arguments named
            (module docstring). A field whose name is not in `arguments`
            stays as it is, so a message without fields can hold any text.
        **arguments: the value of each `{name}` field.

    Attributes:
        template, arguments: as given.
        flags: `{argument: flag}` for the arguments a job passed under
            another name than their flag's (set by `flag_names`).
    """

    def __init__(self, template, **arguments):
        self.template = template
        self.arguments = arguments
        self.flags = {}
        super().__init__(self.render())

    def render(self, flag_of=None):
        """The message, each argument spelled as `flag_of` names it.

        Args:
            flag_of: `None` (Python words), or a callable mapping an
                argument name to the flag that feeds it (without `--`),
                or to `None` where no flag does.
        """

        def field(match):
            name, bare = match.group(1), match.group(2)
            if not bare and name not in self.arguments:
                return match.group(0)
            flag = None
            if flag_of is not None:
                flag = flag_of(self.flags.get(name, name))
            if bare:
                return f"--{flag}" if flag else name
            value = self.arguments[name]
            if flag:
                return f"--{flag}={flag_value(value)}"
            return f"{name}={python_value(value)}"

        return _FIELD.sub(field, self.template)


@contextlib.contextmanager
def flag_names(**flags):
    """Records which flag feeds which argument of the calls inside.

    For a job that passes a config field to the library under another
    name: `with flag_names(batch_size="ekg_batch_size"): search(...)`. An
    `ArgumentError` raised inside is re-raised unchanged in Python words
    and says `--ekg_batch_size=...` on the command line. An inner (closer)
    call site's names win.
    """
    try:
        yield
    except ArgumentError as e:
        e.flags = {**flags, **e.flags}
        raise


def positive_ints(owner, **values):
    """`values` as ints, each checked to be a whole number >= 1.

    Raises the Keras-style `ValueError` "`<owner> <arg> must be a positive
    int. Received: <arg>=<value>`" for the first that is not.
    """
    for arg, value in values.items():
        if int(value) != value or value < 1:
            raise ValueError(
                f"{owner} {arg} must be a positive int. "
                f"Received: {arg}={value}"
            )
    return {arg: int(value) for arg, value in values.items()}
