"""Bad input at every entry point: one line naming the culprit, no output.

Each row of `_CASES` is (name, entry point, argv, culprit): the run must
exit with status 2, print exactly one `error:` line on stderr containing
`culprit` (the flag, file or layer at fault) and no traceback, and leave no
checkpoint, report or export behind. Rows run in-process through the same
`train.flags.parse` / `guard` / `job_main` that `app.run` drives (a fresh
`FlagValues` per training row); `SubprocessTest` runs a few rows as real
commands to pin the exit status and stderr of the actual programs.

argv and culprit may use `{tmp}` (a shared folder of bad files made once)
and `{run}` (this row's own, not yet existing, output folder).
"""

import contextlib
import io
import json
import os
import shutil
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from absl.testing import flagsaver
from absl.testing import parameterized

from tfgraft import config as cfg
from tfgraft.testing import test_case
from train import evaluate as evaluate_entry
from train import export as export_entry
from train import flags as flags_lib

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

_JOBS = flags_lib.JOBS

# Small, fast settings so that a row failing late still fails in seconds.
_TINY = [
    "--strategy=default",
    "--model=resnet20",
    "--width_mult=0.25",
    "--epochs=1",
    "--batch_size=8",
    "--eval_batch_size=8",
    "--synthetic_train_size=20",
    "--synthetic_test_size=10",
    "--progress=false",
]
_RUN = ["--workdir={run}", *_TINY]

# (name, entry point, argv, substring of the one-line error)
_CASES = (
    # --- Flag parsing (any entry point) ---
    ("unknown_flag", "baseline", [*_RUN, "--no_such_flag=1"], "no_such_flag"),
    (
        "flag_of_another_job",
        "baseline",
        [*_RUN, "--num_nets=3"],
        "num_nets",
    ),
    ("int_type", "baseline", [*_RUN, "--epochs=three"], "--epochs"),
    ("float_type", "grafting", [*_RUN, "--graft_a=big"], "--graft_a"),
    ("enum_value", "stripe", [*_RUN, "--formulation=fast"], "--formulation"),
    ("missing_workdir", "baseline", _TINY, "--workdir"),
    ("positional_argument", "baseline", [*_RUN, "extra"], "extra"),
    (
        "missing_flagfile",
        "grafting",
        [*_RUN, "--flagfile={tmp}/absent.cfg"],
        "{tmp}/absent.cfg",
    ),
    (
        "trailing_comment",
        "baseline",
        [*_RUN, "--flagfile={tmp}/trailing.cfg"],
        "{tmp}/trailing.cfg:3: trailing comment",
    ),
    # --- Out-of-range values ---
    ("batch_size_zero", "baseline", [*_RUN, "--batch_size=0"], "--batch_size"),
    (
        "batch_size_accum",
        "baseline",
        [*_RUN, "--batch_size=9", "--accum_steps=2"],
        "--batch_size=9",
    ),
    ("epochs_negative", "stripe", [*_RUN, "--epochs=-1"], "--epochs=-1"),
    ("num_nets_nine", "grafting", [*_RUN, "--num_nets=9"], "--num_nets=9"),
    ("graft_every", "grafting", [*_RUN, "--graft_every=soon"], "graft_every"),
    ("milestones", "baseline", [*_RUN, "--milestones=a,b"], "--milestones"),
    ("stripe_sr", "stripe", [*_RUN, "--sr=-0.1"], "--sr=-0.1"),
    (
        "stripe_target_above_one",
        "stripe",
        [*_RUN, "--target_flops_cut=1.5"],
        "--target_flops_cut=1.5: must be in (0, 1)",
    ),
    (
        "stripe_target_nan",
        "stripe",
        [*_RUN, "--target_flops_cut=nan"],
        "--target_flops_cut=nan: must be a finite number",
    ),
    ("lwdna_ratio", "lwdna", [*_RUN, "--ratio=1.5"], "--ratio=1.5"),
    (
        "ekg_rate",
        "ekg",
        [*_RUN, "--pretrained={tmp}/x", "--target_flops_rate=0"],
        "--target_flops_rate=0",
    ),
    (
        "l1prune_cut",
        "l1prune",
        [*_RUN, "--pretrained={tmp}/x", "--target_flops_cut=1.5"],
        "--target_flops_cut=1.5",
    ),
    (
        "l1prune_tolerance",
        "l1prune",
        [*_RUN, "--pretrained={tmp}/x", "--target_tolerance=-0.1"],
        "--target_tolerance=-0.1",
    ),
    (
        "synthetic_size",
        "baseline",
        [*_RUN, "--synthetic_train_size=0"],
        "--synthetic_train_size=0: must be >= 1",
    ),
    (
        "unknown_model",
        "baseline",
        [*_RUN, "--model=resnet21"],
        "--model=resnet21: unknown model",
    ),
    (
        "shortcut_of_a_vgg",
        "baseline",
        [*_RUN, "--model=vgg16", "--shortcut=A"],
        "--shortcut=A: shortcut types apply to ResNets only, not to "
        "--model=vgg16",
    ),
    (
        "lwdna_option_a",
        "lwdna",
        [*_RUN, "--preset=grafting"],
        "--model=resnet20 with option-A shortcuts cannot prune its streams "
        "(pass --shortcut=projection or --preset=dhp)",
    ),
    ("seed_negative", "baseline", [*_RUN, "--seed=-3"], "--seed=-3: must be"),
    (
        "width_mult_empties_layers",
        "baseline",
        [*_RUN, "--width_mult=1e-9"],
        "--width_mult=1e-09: leaves",
    ),
    (
        "width_mult_inf",
        "grafting",
        [*_RUN, "--width_mult=inf"],
        "--width_mult=inf: must be a finite number",
    ),
    (
        "graft_c_inf",
        "grafting",
        [*_RUN, "--graft_c=inf"],
        "--graft_c=inf: must be a finite number",
    ),
    (
        "learning_rate_nan",
        "stripe",
        [*_RUN, "--learning_rate=nan"],
        "--learning_rate=nan: must be a finite number",
    ),
    (
        "milestones_inf",
        "lwdna",
        [*_RUN, "--schedule=multistep", "--milestones=1,inf"],
        "--milestones=1.0,inf: must be a finite number",
    ),
    # --- Data ---
    (
        "missing_folder",
        "baseline",
        [*_RUN, "--dataset=folder:{tmp}/nowhere"],
        "--dataset=folder:{tmp}/nowhere: folder {tmp}/nowhere does not exist",
    ),
    (
        "empty_folder",
        "grafting",
        [*_RUN, "--dataset=folder:{tmp}/empty"],
        "{tmp}/empty",
    ),
    (
        "corrupt_png",
        "baseline",
        [*_RUN, "--dataset=folder:{tmp}/corrupt"],
        "{tmp}/corrupt/train/a/1.png",
    ),
    (
        "unknown_scheme",
        "lwdna",
        [*_RUN, "--dataset=ftp:cifar"],
        "--dataset=ftp:cifar is not",
    ),
    (
        "unknown_tfds_name",
        "baseline",
        [*_RUN, "--dataset=tfds:no_such_set", "--data_dir={tmp}/tfds"],
        "--dataset=tfds:no_such_set: TFDS has no dataset",
    ),
    # --- Channel configs ---
    (
        "channel_config_missing",
        "baseline",
        [*_RUN, "--channel_config={tmp}/absent.json"],
        "{tmp}/absent.json",
    ),
    (
        "channel_config_slots",
        "stripe",
        [*_RUN, "--channel_config={tmp}/few_slots.json"],
        "{tmp}/few_slots.json",
    ),
    (
        "channel_config_width",
        "grafting",
        [*_RUN, "--channel_config={tmp}/float_width.json"],
        "{tmp}/float_width.json",
    ),
    # --- Workdir ---
    (
        "workdir_under_file",
        "baseline",
        ["--workdir={tmp}/a_file/run", *_TINY],
        "--workdir={tmp}/a_file/run",
    ),
    (
        "readonly_workdir",
        "baseline",
        ["--workdir={tmp}/readonly/run", *_TINY],
        "{tmp}/readonly/run",
    ),
    # --- Workdir holding another run (records made from _TINY's flags) ---
    (
        "workdir_of_another_job",
        "stripe",
        ["--workdir={tmp}/grafting_run", *_TINY],
        "--workdir={tmp}/grafting_run holds a train.grafting run, this "
        "command is train.stripe; use a new --workdir",
    ),
    (
        "workdir_other_width_mult",
        "baseline",
        ["--workdir={tmp}/baseline_run", *_TINY, "--width_mult=0.5"],
        "--workdir={tmp}/baseline_run holds a run with --width_mult=0.25, "
        "this command has --width_mult=0.5; use a new --workdir",
    ),
    (
        "workdir_other_learning_rate",
        "baseline",
        ["--workdir={tmp}/baseline_run", *_TINY, "--learning_rate=0.05"],
        "holds a run with --learning_rate=0.1, this command has "
        "--learning_rate=0.05; use a new --workdir (or --force_resume",
    ),
    (
        "workdir_force_resume_cannot_change_the_net",
        "baseline",
        [
            "--workdir={tmp}/baseline_run",
            *_TINY,
            "--precision=mixed_float16",
            "--force_resume",
        ],
        "holds a run with --precision=float32, this command has "
        "--precision=mixed_float16; use a new --workdir (--force_resume "
        "cannot change what the checkpoints hold)",
    ),
    # --- EKG --pretrained ---
    (
        "pretrained_missing",
        "ekg",
        [*_RUN, "--pretrained={tmp}/absent"],
        "--pretrained={tmp}/absent",
    ),
    (
        "pretrained_other_architecture",
        "ekg",
        [*_RUN, "--pretrained={tmp}/dense.weights.h5"],
        "--pretrained={tmp}/dense.weights.h5",
    ),
    (
        "pretrained_keras_with_lambda",
        "ekg",
        [*_RUN, "--pretrained={tmp}/lambda.keras"],
        "--pretrained={tmp}/lambda.keras: whole-model and pickle files are "
        "not loaded",
    ),
    # --- L1 pruning --pretrained ---
    (
        "l1prune_pretrained_missing",
        "l1prune",
        [*_RUN, "--pretrained={tmp}/absent"],
        "--pretrained={tmp}/absent",
    ),
    (
        "l1prune_without_pretrained",
        "l1prune",
        _RUN,
        "--pretrained is required unless --pretrain_epochs > 0",
    ),
    # --- Data folders ---
    (
        "folder_symlink_loop",
        "baseline",
        [*_RUN, "--dataset=folder:{tmp}/symloop"],
        "{tmp}/symloop/train/a/loop.png (Too many levels of symbolic links)",
    ),
    (
        "folder_odd_size_sorts_first",
        "baseline",
        [*_RUN, "--dataset=folder:{tmp}/oddfirst"],
        "{tmp}/oddfirst/train/a/0.png is 16x16, but 8 of the 9",
    ),
    (
        "channel_config_is_a_folder",
        "baseline",
        [*_RUN, "--channel_config={tmp}/empty"],
        "{tmp}/empty cannot be read: Is a directory",
    ),
    # --- train.export ---
    (
        "export_not_a_run",
        "export",
        ["--workdir={tmp}/empty", "--export_dir={run}/out"],
        "--workdir={tmp}/empty",
    ),
    (
        "export_dir_exists",
        "export",
        ["--workdir={tmp}/fake_run", "--export_dir={tmp}/taken"],
        "--export_dir={tmp}/taken",
    ),
    (
        "export_corrupt_config",
        "export",
        ["--workdir={tmp}/corrupt_run", "--export_dir={run}/out"],
        "{tmp}/corrupt_run/config.json",
    ),
    (
        "export_unknown_job",
        "export",
        ["--workdir={tmp}/fake_run", "--job=magic", "--export_dir={run}/out"],
        "--job=magic",
    ),
    (
        "export_net_index",
        "export",
        ["--workdir={tmp}/fake_run", "--net=4", "--export_dir={run}/out"],
        "--net=4",
    ),
    (
        "export_no_checkpoint",
        "export",
        ["--workdir={tmp}/fake_run", "--export_dir={run}/out"],
        "{tmp}/fake_run/checkpoints",
    ),
    # --- train.evaluate ---
    (
        "evaluate_missing_model",
        "evaluate",
        ["--saved_model={tmp}/absent", "--output={run}/eval.json"],
        "--saved_model={tmp}/absent",
    ),
    (
        "evaluate_corrupt_model",
        "evaluate",
        ["--saved_model={tmp}/garbage_model", "--output={run}/eval.json"],
        "--saved_model={tmp}/garbage_model",
    ),
    (
        "evaluate_truncated_variables",
        "evaluate",
        ["--saved_model={tmp}/truncated_model", "--output={run}/eval.json"],
        "--saved_model={tmp}/truncated_model: cannot load",
    ),
    (
        "evaluate_shape_mismatch",
        "evaluate",
        [
            "--saved_model={tmp}/model8",
            "--synthetic_train_size=10",
            "--synthetic_test_size=10",
            "--output={run}/eval.json",
        ],
        "--saved_model={tmp}/model8 takes (8, 8, 3)",
    ),
    (
        "evaluate_unknown_scheme",
        "evaluate",
        [
            "--saved_model={tmp}/model8",
            "--dataset=s3:bucket",
            "--output={run}/eval.json",
        ],
        "--dataset=s3:bucket is not",
    ),
    (
        "evaluate_batch_zero",
        "evaluate",
        [
            "--saved_model={tmp}/model8",
            "--dataset=folder:{tmp}/good",
            "--eval_batch_size=0",
            "--output={run}/eval.json",
        ],
        "--eval_batch_size=0",
    ),
)


def _write_png(path, size=8):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = np.random.default_rng(0).integers(0, 256, (size, size, 3), np.uint8)
    tf.io.write_file(path, tf.io.encode_png(image))


def _image_folder(root):
    for split in ("train", "test"):
        for cls in ("a", "b"):
            for i in range(2):
                _write_png(os.path.join(root, split, cls, f"{i}.png"))


def _make_inputs(tmp):
    """Writes every bad (and helper) file the rows refer to."""
    with open(os.path.join(tmp, "trailing.cfg"), "w") as f:
        f.write("# a flagfile\n--epochs=1\n--seed=3  # lucky\n")
    with open(os.path.join(tmp, "a_file"), "w") as f:
        f.write("a regular file, not a folder\n")
    os.makedirs(os.path.join(tmp, "readonly"))
    os.chmod(os.path.join(tmp, "readonly"), 0o500)
    os.makedirs(os.path.join(tmp, "empty"))
    os.makedirs(os.path.join(tmp, "tfds"))
    _image_folder(os.path.join(tmp, "good"))
    _image_folder(os.path.join(tmp, "symloop"))
    loop = os.path.join(tmp, "symloop", "train", "a", "loop.png")
    os.symlink(loop, loop)
    # 9 train images: the first (sorted) is 16x16, the other 8 are 8x8.
    _image_folder(os.path.join(tmp, "oddfirst"))
    for i in range(2, 4):
        for cls in ("a", "b"):
            _write_png(os.path.join(tmp, "oddfirst", "train", cls, f"{i}.png"))
    _write_png(os.path.join(tmp, "oddfirst", "train", "b", "9.png"))
    _write_png(os.path.join(tmp, "oddfirst", "train", "a", "0.png"), size=16)
    _image_folder(os.path.join(tmp, "corrupt"))
    with open(os.path.join(tmp, "corrupt", "train", "a", "1.png"), "wb") as f:
        f.write(b"\x89PNG garbage, not an image")
    # Channel configs: 2 of resnet20's slots; a fractional width.
    from tfgraft.models import default_channel_config

    widths = dict(default_channel_config("resnet20").widths)
    few = dict(list(widths.items())[:2])
    with open(os.path.join(tmp, "few_slots.json"), "w") as f:
        json.dump({"model": "resnet20", "widths": few}, f)
    widths[next(iter(widths))] = 4.5
    with open(os.path.join(tmp, "float_width.json"), "w") as f:
        json.dump({"model": "resnet20", "widths": widths}, f)
    # Another architecture's weights; a full-model file holding code.
    inputs = keras.Input((4,))
    dense = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    dense.save_weights(os.path.join(tmp, "dense.weights.h5"))
    lam = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2.0)(inputs))
    lam.save(os.path.join(tmp, "lambda.keras"))
    # Runs for train.export: config + job record, no checkpoint.
    for name in ("fake_run", "corrupt_run"):
        os.makedirs(os.path.join(tmp, name))
        with open(os.path.join(tmp, name, "job.json"), "w") as f:
            json.dump({"job": "baseline"}, f)
    with open(os.path.join(tmp, "fake_run", "config.json"), "w") as f:
        json.dump(cfg.JobConfig().to_dict(), f)
    with open(os.path.join(tmp, "fake_run", "data_info.json"), "w") as f:
        json.dump(
            {
                "name": "synthetic",
                "num_classes": 10,
                "image_shape": [8, 8, 3],
                "num_train": 20,
                "num_test": 10,
                "mean": [0.5, 0.5, 0.5],
                "std": [0.25, 0.25, 0.25],
                "recipe": "cifar",
                "class_names": [str(i) for i in range(10)],
            },
            f,
        )
    with open(os.path.join(tmp, "corrupt_run", "config.json"), "w") as f:
        f.write('{"data": {"batch_size": ')
    # Finished-looking runs whose records say what _TINY's flags say.
    _recorded_run(os.path.join(tmp, "grafting_run"), "grafting")
    _recorded_run(os.path.join(tmp, "baseline_run"), "baseline")
    os.makedirs(os.path.join(tmp, "taken"))
    with open(os.path.join(tmp, "taken", "keep.txt"), "w") as f:
        f.write("must survive\n")
    # SavedModels for train.evaluate: a tiny one on 8x8 images; garbage.
    module = tf.Module()
    module.serve = tf.function(
        lambda images: tf.reduce_mean(images, axis=[1, 2])[:, :2],
        input_signature=[tf.TensorSpec([None, 8, 8, 3], tf.float32)],
    )
    tf.saved_model.save(module, os.path.join(tmp, "model8"))
    # A SavedModel whose variables file lost its tail.
    module = tf.Module()
    module.w = tf.Variable(tf.ones([256]))
    module.serve = tf.function(
        lambda images: tf.reduce_mean(images, axis=[1, 2])[:, :2] * module.w[0],
        input_signature=[tf.TensorSpec([None, 8, 8, 3], tf.float32)],
    )
    truncated = os.path.join(tmp, "truncated_model")
    tf.saved_model.save(module, truncated)
    data = os.path.join(truncated, "variables", "variables.data-00000-of-00001")
    with open(data, "r+b") as f:
        f.truncate(16)
    os.makedirs(os.path.join(tmp, "garbage_model"))
    with open(os.path.join(tmp, "garbage_model", "saved_model.pb"), "wb") as f:
        f.write(b"not a protocol buffer \xff\xfe")


def _recorded_run(workdir, entry):
    """Writes the config.json/job.json a run of `entry` on _TINY records."""
    fv = flags.FlagValues()
    flags_lib.define_job(entry, flag_values=fv)
    fv([entry, f"--workdir={workdir}", *_TINY])
    job = _job_class(entry)(flags_lib.job_config(fv))
    os.makedirs(workdir)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(job.config.to_dict(), f)
    with open(os.path.join(workdir, "job.json"), "w") as f:
        json.dump({"job": job.name}, f)


def _job_class(entry):
    return flags_lib.job_class(entry)


def run_in_process(entry, argv):
    """Runs entry point `entry` on `argv`; returns (exit status, stderr)."""
    err = io.StringIO()
    if entry in _JOBS:
        fv = flags.FlagValues()
        flags_lib.define_job(entry, flag_values=fv)
        flags.mark_flags_as_required(["workdir"], flag_values=fv)
        main = flags_lib.job_main(_job_class(entry), fv)
        saver = contextlib.nullcontext()
    else:
        # train.export / train.evaluate define their flags on FLAGS.
        fv = flags.FLAGS
        main = {"export": export_entry, "evaluate": evaluate_entry}[entry].main
        saver = flagsaver.flagsaver()
    code = 0
    with saver, contextlib.redirect_stderr(err):
        try:
            rest = flags_lib.parse([entry, *argv], fv)
            flags_lib.guard(main)(rest)
        except SystemExit as e:
            code = e.code
        except Exception as e:  # noqa: BLE001 - reported as the failure
            code = f"Traceback: {type(e).__name__}: {e}"
    return code, err.getvalue()


class _BadInputBase(parameterized.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp(prefix="bad_input_")
        _make_inputs(cls.tmp)

    @classmethod
    def tearDownClass(cls):
        os.chmod(os.path.join(cls.tmp, "readonly"), 0o700)
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    def _prepare(self, name, argv, culprit):
        if name == "readonly_workdir" and os.geteuid() == 0:
            self.skipTest("root writes into 0o500 folders")
        run = os.path.join(self.tmp, "runs", name)
        fill = {"tmp": self.tmp, "run": run}
        return run, [a.format(**fill) for a in argv], culprit.format(**fill)

    def _check(self, run, code, stderr, culprit):
        self.assertEqual(code, 2, stderr[-3000:])
        self.assertNotIn("Traceback", stderr)
        lines = test_case.error_lines(stderr)
        self.assertLen(lines, 1, stderr[-3000:])
        self.assertIn(culprit, lines[0])
        # No partial output: nothing trained, reported or exported.
        for leftover in ("checkpoints", "report.json", "export", "out"):
            self.assertFalse(os.path.exists(os.path.join(run, leftover)))
        self.assertFalse(os.path.exists(os.path.join(run, "eval.json")))
        self.assertEqual(
            os.listdir(os.path.join(self.tmp, "taken")), ["keep.txt"]
        )


class BadInputTest(_BadInputBase):
    def test_table_is_wide(self):
        self.assertGreaterEqual(len(_CASES), 25)
        entries = {entry for _, entry, _, _ in _CASES}
        self.assertEqual(
            entries, set(_JOBS) | {"export", "evaluate"}, "every entry point"
        )

    def test_one_job_registry(self):
        # train.export, the entry points' flag groups and these rows all
        # read flags_lib.JOBS: every job's class knows its own name.
        self.assertEqual(
            set(_JOBS),
            {"baseline", "grafting", "stripe", "ekg", "lwdna", "l1prune"},
        )
        for name in _JOBS:
            self.assertEqual(flags_lib.job_class(name).name, name)
            self.assertIn("common", flags_lib.JOB_GROUPS[name])

    @parameterized.named_parameters(*_CASES)
    def test_one_line_error(self, entry, argv, culprit):
        run, argv, culprit = self._prepare(
            self._testMethodName.split("test_one_line_error_")[-1],
            argv,
            culprit,
        )
        code, stderr = run_in_process(entry, argv)
        self._check(run, code, stderr, culprit)


def _sources():
    for folder in ("tfgraft", "train"):
        for base, _, files in os.walk(os.path.join(ROOT, folder)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(base, name)
                    with open(path) as f:
                        yield os.path.relpath(path, ROOT), f.read()


class SafeLoadingTest(_BadInputBase):
    def test_lambda_file_is_code(self):
        # The fixture really needs code to load: safe mode refuses it.
        path = os.path.join(self.tmp, "lambda.keras")
        with self.assertRaisesRegex(ValueError, "safe_mode"):
            keras.saving.load_model(path, safe_mode=True)

    def test_no_unsafe_loaders_in_the_library(self):
        # User paths never reach pickle-capable or code-running loaders.
        calls = (
            ("np.load(", "allow_pickle=False"),
            ("numpy.load(", "allow_pickle=False"),
            ("load_model(", "safe_mode=True"),
        )
        for rel, text in _sources():
            for banned in ("import pickle", "import dill", "import joblib"):
                self.assertNotIn(banned, text, rel)
            self.assertNotIn("safe_mode=False", text, rel)
            self.assertNotIn("enable_unsafe_deserialization", text, rel)
            for call, needed in calls:
                start = text.find(call)
                while start >= 0:
                    end = text.find(")", start)
                    self.assertIn(needed, text[start : end + 1], rel)
                    start = text.find(call, start + 1)


# Rows also run as real commands (exit status and stderr of the program).
_SUBPROCESS = (
    "unknown_flag",
    "trailing_comment",
    "export_dir_exists",
    "evaluate_missing_model",
)


@pytest.mark.large
class SubprocessTest(_BadInputBase):
    @parameterized.named_parameters(
        (name, entry, argv, culprit)
        for name, entry, argv, culprit in _CASES
        if name in _SUBPROCESS
    )
    def test_real_command(self, entry, argv, culprit):
        name = self._testMethodName.split("test_real_command_")[-1]
        run, argv, culprit = self._prepare(name, argv, culprit)
        proc = test_case.run_entry_point(f"train.{entry}", *argv, cwd=ROOT)
        self._check(run, proc.returncode, proc.stderr, culprit)
        self.assertFalse(os.path.exists(run))

    def test_help_exits_0(self):
        for flag, shown in (
            ("--helpfull", "--width_mult"),
            ("--help", "Try --helpfull"),
        ):
            proc = test_case.run_entry_point("train.baseline", flag, cwd=ROOT)
            self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
            self.assertIn(shown, proc.stdout)


if __name__ == "__main__":
    tf.test.main()
