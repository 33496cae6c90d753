"""tfgraft.errors: one message, in Python's words or the command line's.

Library errors name the Python argument (`batch_size=0`); `train/flags.py`
shows the same error with the flag that feeds it (`--ekg_batch_size=0`).
"""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tfgraft import config as cfg
from tfgraft import errors
from tfgraft.ekg import data as ekg_data
from tfgraft.ekg import search as search_lib
from tfgraft.lwdna import shrink as shrink_lib
from tfgraft.training import trainer as trainer_lib
from train import flags as flags_lib


class RenderTest(tf.test.TestCase):
    def test_python_and_flag_words(self):
        e = errors.ArgumentError(
            "{threshold}: too high; lower {threshold!n} or {sr!n}",
            threshold=0.5,
        )
        self.assertIsInstance(e, ValueError)
        self.assertEqual(
            str(e), "threshold=0.5: too high; lower threshold or sr"
        )
        self.assertEqual(
            e.render(lambda name: name),
            "--threshold=0.5: too high; lower --threshold or --sr",
        )
        # An argument no flag feeds keeps its Python spelling.
        self.assertEqual(
            e.render(lambda name: None if name == "sr" else name),
            "--threshold=0.5: too high; lower --threshold or sr",
        )

    def test_values_as_written(self):
        e = errors.ArgumentError(
            "{spec} {cuts} {jit}", spec="ftp:x", cuts=(0.4, 0.9), jit=True
        )
        self.assertEqual(str(e), "spec='ftp:x' cuts=(0.4, 0.9) jit=True")
        self.assertEqual(
            e.render(lambda name: name),
            "--spec=ftp:x --cuts=0.4,0.9 --jit=true",
        )

    def test_other_braces_are_text(self):
        # Fields that are no argument (TF's `{{function_node ...}}`, a
        # path with braces) stay as they are.
        text = "{{function_node x}} in /a/{b}/c: {spec}"
        e = errors.ArgumentError(text, spec="s")
        self.assertEqual(str(e), "{{function_node x}} in /a/{b}/c: spec='s'")
        self.assertEqual(str(errors.ArgumentError(text)), text)

    def test_flag_names_at_the_call_site(self):
        with self.assertRaises(errors.ArgumentError) as ctx:
            with errors.flag_names(batch_size="search_batch_size"):
                with errors.flag_names(batch_size="ekg_batch_size"):
                    search_lib.SearchConfig(batch_size=0)
        e = ctx.exception
        self.assertEqual(str(e), "batch_size=0: must be >= 1")
        # The closest call site wins.
        self.assertEqual(
            flags_lib.flag_message(e), "--ekg_batch_size=0: must be >= 1"
        )

    def test_argument_flag_from_the_declarations(self):
        # The flag of that name, else the flag of the one field of that name.
        self.assertEqual(cfg.argument_flag("threshold"), "threshold")
        self.assertEqual(cfg.argument_flag("batch_size"), "batch_size")
        self.assertEqual(cfg.argument_flag("name"), "model")
        self.assertEqual(cfg.argument_flag("temperature"), "kd_temperature")
        self.assertEqual(
            cfg.argument_flag("val_per_class"), "search_val_per_class"
        )
        self.assertIsNone(cfg.argument_flag("global_batch_size"))
        self.assertIsNone(cfg.argument_flag("mean"))

    def test_other_errors_unchanged(self):
        e = cfg.ConfigError("--sr=-1: must be >= 0")
        self.assertEqual(flags_lib.flag_message(e), "--sr=-1: must be >= 0")

    def test_positive_ints(self):
        self.assertEqual(
            errors.positive_ints("Bank", capacity=3.0, gates=1),
            {"capacity": 3, "gates": 1},
        )
        self.assertIsInstance(
            errors.positive_ints("Bank", capacity=3.0)["capacity"], int
        )
        for bad in (0, -2, 2.5):
            with self.assertRaisesRegex(
                ValueError,
                rf"^Bank gates must be a positive int\. "
                rf"Received: gates={bad}$",
            ):
                errors.positive_ints("Bank", capacity=3, gates=bad)


def _trainer_batch():
    trainer_lib.Trainer(
        [None],
        [None],
        tf.distribute.get_strategy(),
        global_batch_size=6,
        accum_steps=4,
    )


# (name, call, Python message, the command line's)
_CASES = (
    (
        "search_rate",
        lambda: search_lib.SearchConfig(target_flops_rate=1.5),
        "target_flops_rate=1.5: must be in (0, 1) (the fraction of FLOPs "
        "kept)",
        "--target_flops_rate=1.5: must be in (0, 1) (the fraction of FLOPs "
        "kept)",
    ),
    (
        "search_step",
        lambda: search_lib.SearchConfig(search_step=0.0),
        "search_step=0.0: must be in (0, 1]",
        "--search_step=0.0: must be in (0, 1]",
    ),
    (
        "cost_mode",
        lambda: search_lib.SearchConfig(cost_mode="exact"),
        "cost_mode='exact': must be one of as_coded, intended",
        "--cost_mode=exact: must be one of as_coded, intended",
    ),
    (
        "search_val_per_class",
        lambda: ekg_data.search_indices(
            np.array([0, 0, 1, 1]), val_per_class=2
        ),
        "val_per_class=2: class 0 has only 2 training images",
        "--search_val_per_class=2: class 0 has only 2 training images",
    ),
    (
        "classifier_input",
        lambda: shrink_lib.check_classifier_input("drop"),
        "classifier_input='drop': must be one of linear, keep",
        "--classifier_input=drop: must be one of linear, keep",
    ),
    (
        "trainer_batch",
        _trainer_batch,
        "global_batch_size=6 must be divisible by the replicas (1) x "
        "accum_steps=4",
        # No flag is called global_batch_size: the job checks --batch_size
        # itself before it builds a Trainer.
        "global_batch_size=6 must be divisible by the replicas (1) x "
        "--accum_steps=4",
    ),
)


class PublicApiTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(*_CASES)
    def test_names_the_python_argument(self, call, python, command_line):
        with self.assertRaises(errors.ArgumentError) as ctx:
            call()
        self.assertEqual(str(ctx.exception), python)
        self.assertNotIn("--", str(ctx.exception))
        self.assertEqual(flags_lib.flag_message(ctx.exception), command_line)


if __name__ == "__main__":
    tf.test.main()
