"""ChannelConfig: the per-layer widths of one zoo network, as a JSON file.

A channel config names the registry model it belongs to and gives one output
width per *width slot*. A slot is one independently choosable width: every
conv whose output channels must agree (all convs writing one residual stream)
shares a slot, every other conv has its own. Pruned, searched and derived
networks are nothing more than new configs for the same model, so they rebuild
with `tfgraft.models.build_model(name, channel_config=config)` and keep every
layer name.

The file format is plain JSON:

    {"model": "resnet20", "preset": "dhp", "shortcut": "projection",
     "widths": {"stage1": 16, "stage1/block0/conv1": 16, ...}}

`preset` and `shortcut` are optional: they record the topology a config was
derived for (a pruned or searched config only fits the network it came
from: another preset or shortcut type builds another network), and
`build_model` refuses to build a config for another preset or shortcut
(`check_topology`). Files without them (older files, hand-written ones) are
checked against the model name and slots only.

Slot names per model are documented in its architecture module; use
`default_channel_config(name).widths` to list them.
"""

import dataclasses
import json
import math
import os
from collections.abc import Mapping

from tfgraft import errors

_KEYS = ("model", "widths")
_OPTIONAL_KEYS = ("preset", "shortcut")


class ChannelConfigError(errors.ArgumentError):
    """A channel config (file) does not fit its model; names file and slot."""


def describe_source(source):
    """Returns how error messages name a config: its file or "(in memory)"."""
    if source:
        return f"channel config {source}"
    return "channel config (in memory)"


def _source_field(source):
    # A topology mismatch is the caller's choice of config: name it as the
    # argument (`channel_config=`, the flag on the command line).
    return "{channel_config}" if source else "channel config (in memory)"


@dataclasses.dataclass(frozen=True)
class ChannelConfig:
    """Output width of every width slot of one registry model.

    Instances are immutable values: `widths` is copied into a new dict in
    insertion order (the order of the default config, so files read
    top-down through the network). Each width must be a positive `int`.

    Args:
        model: registry name the config belongs to, e.g. `"resnet56"`.
        widths: mapping from slot name to output channels.
        preset: the zoo preset the config was made for, or None (unknown:
            any preset builds it).
        shortcut: the resolved shortcut type (`"A"` or `"projection"`) the
            config was made for, or None (unknown, or a model without
            shortcuts).
        source: where the config came from (a file path) for error
            messages; not part of equality and not written to JSON.

    Example:

    >>> config = ChannelConfig("resnet20", {"stage1": 16, "stage2": 32})
    >>> config.scaled(0.5).widths["stage2"]
    16
    """

    model: str
    widths: Mapping[str, int]
    preset: str | None = None
    shortcut: str | None = None
    source: str | None = dataclasses.field(
        default=None, compare=False, repr=False
    )

    def __post_init__(self):
        where = describe_source(self.source)
        if not isinstance(self.model, str) or not self.model:
            raise ChannelConfigError(
                f"{where}: 'model' must be a non-empty registry name. "
                f"Received: model={self.model!r}"
            )
        if not isinstance(self.widths, Mapping):
            raise ChannelConfigError(
                f"{where}: 'widths' must map slot names to ints. "
                f"Received: widths={self.widths!r}"
            )
        for key in _OPTIONAL_KEYS:
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value):
                raise ChannelConfigError(
                    f"{where}: '{key}' must be a non-empty string or null. "
                    f"Received: {key}={value!r}"
                )
        widths = {}
        for slot, width in self.widths.items():
            if not isinstance(slot, str) or not slot:
                raise ChannelConfigError(
                    f"{where}: slot names must be non-empty strings. "
                    f"Received: slot={slot!r}"
                )
            # bool is an int subclass; `true` in a JSON file is a mistake.
            if isinstance(width, bool) or not isinstance(width, int):
                raise ChannelConfigError(
                    f"{where}: slot '{slot}' width must be an int. "
                    f"Received: {width!r}"
                )
            if width < 1:
                raise ChannelConfigError(
                    f"{where}: slot '{slot}' width must be >= 1. "
                    f"Received: {width}"
                )
            widths[slot] = int(width)
        object.__setattr__(self, "widths", widths)

    def __hash__(self):
        # The generated hash would fail on the dict; hash its items instead.
        widths = tuple(self.widths.items())
        return hash((self.model, self.preset, self.shortcut, widths))

    # === Checks against a model ===

    def check_slots(self, name, expected_slots):
        """Raises `ChannelConfigError` unless this config fits model `name`.

        Args:
            name: registry name the config must belong to (the `name` of
                `build_model`).
            expected_slots: every slot name the model needs.
        """
        if self.model != name:
            raise ChannelConfigError(
                _source_field(self.source)
                + f": built for model {self.model!r}, got "
                + "{name}",
                channel_config=self.source,
                name=name,
            )
        expected = list(expected_slots)
        for what, slots in (
            ("missing", [s for s in expected if s not in self.widths]),
            ("unknown", [s for s in self.widths if s not in expected]),
        ):
            if slots:
                raise ChannelConfigError(
                    f"{describe_source(self.source)}: {what} slot "
                    f"'{slots[0]}' for model '{name}' ({len(slots)} {what} "
                    "in all)."
                )

    def check_topology(self, preset, shortcut):
        """Raises `ChannelConfigError` unless the recorded topology matches.

        Fields the config does not record (None) are not checked.

        Args:
            preset: the resolved preset of the network being built.
            shortcut: its resolved shortcut type (None for models without
                shortcuts).
        """
        for key, value in (("preset", preset), ("shortcut", shortcut)):
            recorded = getattr(self, key)
            if recorded is not None and recorded != value:
                raise ChannelConfigError(
                    _source_field(self.source)
                    + f": built for {key} {recorded!r}, got "
                    + "{%s}" % key,
                    channel_config=self.source,
                    **{key: value},
                )

    # === Derived configs ===

    def with_topology(self, preset, shortcut):
        """Returns a copy recording `preset` and `shortcut`.

        Pass the values `tfgraft.models.resolve_topology` returns, so the
        config records what was built, not what was left to defaults.
        """
        return dataclasses.replace(self, preset=preset, shortcut=shortcut)

    def scaled(self, width_mult):
        """Returns a config with every width multiplied by `width_mult`.

        Widths are rounded half up and kept >= 1. The RGB input is not a
        slot, so it is never scaled.
        """
        widths = {
            slot: max(1, width)
            for slot, width in self.rounded_widths(width_mult).items()
        }
        return dataclasses.replace(self, widths=widths)

    def rounded_widths(self, width_mult):
        """Every width times `width_mult`, rounded half up, NOT kept >= 1.

        `scaled` clamps these to 1; a caller that must tell a user their
        multiplier empties a layer reads the zeros here.
        """
        width_mult = float(width_mult)
        if not math.isfinite(width_mult) or width_mult <= 0:
            raise ValueError(
                f"width_mult must be a finite number > 0. "
                f"Received: width_mult={width_mult}"
            )
        return {
            slot: int(math.floor(width * width_mult + 0.5))
            for slot, width in self.widths.items()
        }

    # === JSON ===

    def to_json(self):
        """Returns the config as indented JSON text (slot order kept).

        `preset` and `shortcut` are written only when recorded.
        """
        data = {"model": self.model}
        for key in _OPTIONAL_KEYS:
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        data["widths"] = dict(self.widths)
        return json.dumps(data, indent=2, allow_nan=False)

    @classmethod
    def from_json(cls, text, source=None):
        """Parses `to_json` output; `source` names the text in errors."""
        where = describe_source(source)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ChannelConfigError(f"{where} is not valid JSON: {e}") from e
        if not isinstance(data, dict):
            raise ChannelConfigError(
                f"{where} must hold a JSON object with keys {list(_KEYS)}."
            )
        for key in _KEYS:
            if key not in data:
                raise ChannelConfigError(f"{where} lacks the key '{key}'.")
        extra = sorted(set(data) - set(_KEYS) - set(_OPTIONAL_KEYS))
        if extra:
            raise ChannelConfigError(
                f"{where} has unknown key '{extra[0]}'; "
                f"expected only {list(_KEYS + _OPTIONAL_KEYS)}."
            )
        return cls(
            data["model"],
            data["widths"],
            preset=data.get("preset"),
            shortcut=data.get("shortcut"),
            source=source,
        )

    @classmethod
    def load(cls, path):
        """Reads a config file written by `save`."""
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise ChannelConfigError(
                f"channel config {path} cannot be read: {e.strerror}"
            ) from e
        return cls.from_json(text, source=path)

    def save(self, path):
        """Writes the config atomically (temporary file, then rename)."""
        from tfgraft import io

        io.atomic_write_text(os.fspath(path), self.to_json() + "\n")
