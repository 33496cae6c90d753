"""Tests for tfgraft.models.channel_config and config validation."""

import json
import os

import tensorflow as tf
from absl.testing import parameterized

from tfgraft.models import ChannelConfig
from tfgraft.models import ChannelConfigError
from tfgraft.models import build_model
from tfgraft.models import default_channel_config
from tfgraft.models import resolve_topology
from train import flags as flags_lib


class ChannelConfigTest(tf.test.TestCase, parameterized.TestCase):
    def test_json_round_trip_keeps_values_and_order(self):
        config = default_channel_config("resnet20")
        again = ChannelConfig.from_json(config.to_json())
        self.assertEqual(again, config)
        self.assertEqual(list(again.widths), list(config.widths))
        self.assertEqual(json.loads(config.to_json())["model"], "resnet20")
        self.assertEqual(hash(again), hash(config))

    def test_save_load_round_trip(self):
        config = default_channel_config("mobilenetv2").scaled(0.5)
        path = os.path.join(self.get_temp_dir(), "mbv2.json")
        config.save(path)
        loaded = ChannelConfig.load(path)
        self.assertEqual(loaded, config)
        self.assertEqual(loaded.source, path)
        # save leaves no temporary file behind.
        self.assertEqual(os.listdir(self.get_temp_dir()), ["mbv2.json"])

    def test_scaled_rounds_half_up_and_keeps_at_least_one(self):
        config = ChannelConfig("resnet20", {"a": 16, "b": 5, "c": 3})
        self.assertEqual(config.scaled(0.3).widths, {"a": 5, "b": 2, "c": 1})
        self.assertEqual(config.scaled(0.5).widths, {"a": 8, "b": 3, "c": 2})
        self.assertEqual(config.scaled(0.01).widths, {"a": 1, "b": 1, "c": 1})
        self.assertEqual(config.scaled(2).widths, {"a": 32, "b": 10, "c": 6})

    @parameterized.named_parameters(("zero", 0.0), ("negative", -1.0))
    def test_scaled_rejects_bad_multiplier(self, mult):
        with self.assertRaisesRegex(ValueError, "width_mult"):
            ChannelConfig("resnet20", {"a": 4}).scaled(mult)

    def test_default_config_scaled(self):
        config = default_channel_config("resnet56", width_mult=0.5)
        self.assertEqual(config.widths["stage1"], 8)
        self.assertEqual(config.widths["stage3/block8/conv1"], 32)
        self.assertLen(config.widths, 3 + 27)


def _config_with(widths_update=None, drop=None, model="resnet20"):
    widths = dict(default_channel_config("resnet20").widths)
    widths.update(widths_update or {})
    if drop:
        del widths[drop]
    return {"model": model, "widths": widths}


# Each case: (name, JSON data, expected fragment of the message).
_BAD_FILES = (
    ("zero_width", _config_with({"stage2": 0}), "'stage2'"),
    (
        "negative_width",
        _config_with({"stage3/block1/conv1": -4}),
        "'stage3/block1/conv1'",
    ),
    ("float_width", _config_with({"stage1": 16.5}), "'stage1'"),
    ("bool_width", _config_with({"stage1": True}), "'stage1'"),
    ("missing_key", {"model": "resnet20"}, "'widths'"),
    ("unknown_key", {**_config_with(), "flops": 3}, "'flops'"),
    ("not_an_object", [1, 2], "JSON object"),
)

# Cases that parse but do not fit resnet20 (option A).
_BAD_FOR_MODEL = (
    ("wrong_model", _config_with(model="resnet32"), "resnet32"),
    (
        "missing_slot",
        _config_with(drop="stage2/block1/conv1"),
        "'stage2/block1/conv1'",
    ),
    ("extra_slot", _config_with({"stage4": 8}), "'stage4'"),
    ("option_a_narrows", _config_with({"stage3": 24}), "'stage3'"),
)


class ChannelConfigErrorTest(tf.test.TestCase, parameterized.TestCase):
    def _write(self, data, text=None):
        path = os.path.join(self.get_temp_dir(), "bad.json")
        with open(path, "w") as f:
            f.write(text if text is not None else json.dumps(data))
        return path

    @parameterized.named_parameters(*_BAD_FILES)
    def test_bad_file_names_file_and_slot(self, data, fragment):
        path = self._write(data)
        with self.assertRaises(ChannelConfigError) as ctx:
            ChannelConfig.load(path)
        self.assertIn(path, str(ctx.exception))
        self.assertIn(fragment, str(ctx.exception))

    def test_invalid_json_names_file(self):
        path = self._write(None, text="{not json")
        with self.assertRaisesRegex(ChannelConfigError, "not valid JSON"):
            ChannelConfig.load(path)

    def test_missing_file_names_file(self):
        path = os.path.join(self.get_temp_dir(), "absent.json")
        with self.assertRaisesRegex(ChannelConfigError, "absent.json"):
            ChannelConfig.load(path)

    @parameterized.named_parameters(*_BAD_FOR_MODEL)
    def test_config_not_fitting_model(self, data, fragment):
        path = self._write(data)
        config = ChannelConfig.load(path)
        with self.assertRaises(ChannelConfigError) as ctx:
            build_model("resnet20", channel_config=config)
        self.assertIn(path, str(ctx.exception))
        self.assertIn(fragment, str(ctx.exception))

    def test_in_memory_error_says_so(self):
        with self.assertRaisesRegex(ChannelConfigError, r"in memory.*'x'"):
            ChannelConfig("resnet20", {"x": 0})

    def test_projection_allows_narrowing_stream(self):
        config = ChannelConfig.from_json(
            json.dumps(_config_with({"stage3": 24}))
        )
        model = build_model(
            "resnet20", channel_config=config, shortcut="projection"
        )
        self.assertEqual(model.get_layer("stage3_block2_conv2").filters, 24)

    def test_rejects_non_config(self):
        with self.assertRaisesRegex(TypeError, "ChannelConfig"):
            build_model("resnet20", channel_config={"stage1": 16})


def _derived_file(tmpdir, preset="dhp", shortcut="projection"):
    # What LW-DNA writes: widths plus the topology they were made for.
    config = default_channel_config("resnet20").scaled(0.25)
    config = config.with_topology(preset, shortcut)
    path = os.path.join(tmpdir, "derived.json")
    config.save(path)
    return path


class TopologyTest(tf.test.TestCase, parameterized.TestCase):
    def test_round_trip_records_preset_and_shortcut(self):
        path = _derived_file(self.get_temp_dir())
        with open(path) as f:
            data = json.load(f)
        self.assertEqual(list(data), ["model", "preset", "shortcut", "widths"])
        self.assertEqual(
            (data["preset"], data["shortcut"]), ("dhp", "projection")
        )
        loaded = ChannelConfig.load(path)
        self.assertEqual(
            (loaded.preset, loaded.shortcut), ("dhp", "projection")
        )
        # scaled() keeps the recorded topology.
        self.assertEqual(loaded.scaled(2).preset, "dhp")
        self.assertEqual(loaded.scaled(2).shortcut, "projection")
        # The topology is part of the value.
        self.assertNotEqual(loaded, loaded.with_topology("pff", "projection"))

    def test_unknown_topology_is_not_written(self):
        config = default_channel_config("resnet20")
        self.assertEqual(
            list(json.loads(config.to_json())), ["model", "widths"]
        )

    def test_old_file_loads_and_builds_with_any_preset(self):
        path = os.path.join(self.get_temp_dir(), "old.json")
        with open(path, "w") as f:
            json.dump(_config_with(), f)
        config = ChannelConfig.load(path)
        self.assertIsNone(config.preset)
        self.assertIsNone(config.shortcut)
        for preset in ("grafting", "dhp"):
            model = build_model(
                "resnet20", channel_config=config, preset=preset
            )
            self.assertEqual(model.get_layer("fc").units, 10)

    @parameterized.named_parameters(
        (
            "default_preset",
            dict(),
            "built for preset 'dhp', got {preset}grafting",
        ),
        (
            "other_preset",
            dict(preset="pff", shortcut="projection"),
            "built for preset 'dhp', got {preset}pff",
        ),
        (
            "other_shortcut",
            dict(preset="dhp", shortcut="A"),
            "built for shortcut 'projection', got {shortcut}A",
        ),
    )
    def test_mismatch_is_one_line_naming_file(self, kwargs, message):
        path = _derived_file(self.get_temp_dir())
        config = ChannelConfig.load(path)
        with self.assertRaises(ChannelConfigError) as ctx:
            build_model("resnet20", channel_config=config, **kwargs)
        # Python's words; the command line's (train/flags.py) name flags.
        self.assertEqual(
            str(ctx.exception),
            f"channel_config='{path}': "
            + message.format(preset="preset='", shortcut="shortcut='")
            + "'",
        )
        self.assertEqual(
            flags_lib.flag_message(ctx.exception),
            f"--channel_config={path}: "
            + message.format(preset="--preset=", shortcut="--shortcut="),
        )

    def test_model_mismatch_names_argument_and_flag(self):
        config = ChannelConfig.load(_derived_file(self.get_temp_dir()))
        with self.assertRaisesRegex(
            ChannelConfigError,
            r"derived.json': built for model 'resnet20', got "
            r"name='resnet32'$",
        ) as ctx:
            build_model("resnet32", channel_config=config, preset="dhp")
        self.assertRegex(
            flags_lib.flag_message(ctx.exception),
            r"^--channel_config=\S*derived.json: built for model 'resnet20', "
            r"got --model=resnet32$",
        )

    def test_matching_topology_builds(self):
        config = ChannelConfig.load(_derived_file(self.get_temp_dir()))
        # The shortcut left to the preset's default resolves to the same.
        model = build_model("resnet20", channel_config=config, preset="dhp")
        self.assertEqual(model.get_layer("stage2_block0_conv1").filters, 8)

    @parameterized.named_parameters(
        ("defaults", "resnet20", None, None, ("grafting", "A")),
        ("dhp", "resnet20", "dhp", None, ("dhp", "projection")),
        (
            "explicit",
            "resnet56",
            "grafting",
            "projection",
            ("grafting", "projection"),
        ),
        ("imagenet", "resnet18", None, None, ("grafting", "projection")),
        ("no_shortcuts", "vgg16", "pff", None, ("pff", None)),
    )
    def test_resolve_topology(self, name, preset, shortcut, expected):
        self.assertEqual(resolve_topology(name, preset, shortcut), expected)

    def test_bad_recorded_preset_names_file(self):
        path = os.path.join(self.get_temp_dir(), "bad.json")
        with open(path, "w") as f:
            json.dump({**_config_with(), "preset": 3}, f)
        with self.assertRaisesRegex(ChannelConfigError, "bad.json.*'preset'"):
            ChannelConfig.load(path)


if __name__ == "__main__":
    tf.test.main()
