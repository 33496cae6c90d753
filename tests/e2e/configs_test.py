"""Every configs/*.cfg parses with its own job's flags and valid values."""

import glob
import os
import re

import pytest
import tensorflow as tf
from absl import flags
from absl.testing import parameterized

from tfgraft import complexity
from tfgraft import config as cfg
from tfgraft import models
from tfgraft.study import spec as spec_lib
from tfgraft.testing import test_case
from train import flags as flags_lib

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.cfg")))


def _job_of(path):
    with open(path) as f:
        header = "".join(line for line in f if line.startswith("#"))
    match = re.search(r"python -m train\.(\w+)", header)
    return match.group(1) if match else None


def _parse(path, job, args=None):
    fv = flags.FlagValues()
    flags_lib.define_job(job, flag_values=fv)
    if args is None:
        args = [f"--flagfile={os.path.relpath(path, ROOT)}"]
    cwd = os.getcwd()
    os.chdir(ROOT)  # nested flagfile paths resolve against the CWD
    try:
        flags_lib.check_flagfiles(args)
        fv(["prog", *args])
    finally:
        os.chdir(cwd)
    return fv


def _study_lines(path, name):
    prefix = f"--{name}="
    with open(path) as f:
        return [
            line.strip()[len(prefix) :]
            for line in f
            if line.strip().startswith(prefix)
        ]


class ConfigsTest(tf.test.TestCase, parameterized.TestCase):
    def test_there_are_configs(self):
        names = {os.path.basename(p) for p in CONFIGS}
        self.assertIn("quickstart.cfg", names)
        self.assertIn("baseline_cifar10_resnet56.cfg", names)

    @parameterized.named_parameters(
        (os.path.basename(p)[:-4], p) for p in CONFIGS
    )
    def test_config_parses(self, path):
        job = _job_of(path)
        self.assertIsNotNone(job, f"{path}: header names no command")
        if job == "study":
            self._check_study(path)
            return
        self.assertIn(job, flags_lib.JOB_GROUPS)
        flags_lib.check_flagfiles([f"--flagfile={path}"])
        fv = _parse(path, job)
        config = flags_lib.job_config(fv)
        self.assertIsInstance(config, cfg.JobConfig)
        self.assertIn(config.model.name, models.available_models())
        if job == "grafting":
            self.assertIsNotNone(config.graft)

    def _check_study(self, path):
        """Every arm of a study config parses with its own job's flags."""
        arms = [spec_lib.parse_arm(t) for t in _study_lines(path, "arm")]
        self.assertNotEmpty(arms, f"{path}: no --arm")
        names = [a.name for a in arms]
        for text in _study_lines(path, "compare"):
            spec_lib.parse_comparison(text, names)
        study = spec_lib.Study("/tmp/study", tuple(arms), (0,))
        for cell in study.cells():
            fv = _parse(path, cell.arm.job, list(cell.argv))
            config = flags_lib.job_config(fv)
            self.assertIsInstance(config, cfg.JobConfig)

    @parameterized.named_parameters(
        ("resnet20", "lwdna_cifar10_resnet20.cfg"),
        ("resnet56", "lwdna_cifar10_resnet56.cfg"),
        ("quick", "lwdna_quick.cfg"),
    )
    def test_lwdna_cifar_ratio_targets_uniform_flops(self, name):
        # --ratio is relative to the widened net; the CIFAR configs pick
        # the one that lands on the uniform net's DHP FLOPs, so LW-DNA and
        # the uniform net compare at equal FLOPs.
        config = flags_lib.job_config(
            _parse(os.path.join(ROOT, "configs", name), "lwdna")
        )
        m = config.model
        self.assertEqual(m.width_mult, 2.0)
        self.assertEqual(config.lwdna.classifier_input, "linear")
        self.assertTrue(config.lwdna.train_uniform)

        def flops(channel_config):
            net = models.build_model(
                m.name, channel_config=channel_config, preset=m.preset
            )
            return complexity.count(net, "dhp").flops

        original = models.default_channel_config(m.name)
        target = config.lwdna.ratio * flops(original.scaled(m.width_mult))
        self.assertLess(abs(target / flops(original) - 1), 1e-3)

    def test_lwdna_imagenet_trains_without_flip(self):
        # The reference's ImageNet loader drops the flip unless its
        # inverted --no_flip is passed (METHODS §4.5); the recipe matches.
        path = os.path.join(ROOT, "configs", "lwdna_imagenet_resnet50.cfg")
        config = flags_lib.job_config(_parse(path, "lwdna"))
        self.assertFalse(config.data.flip)
        self.assertEqual(config.data.augment, "imagenet")
        self.assertEqual(config.lwdna.classifier_input, "linear")
        self.assertEqual(config.lwdna.ratio, 0.23)
        # Every other config keeps the default flip.
        for other in CONFIGS:
            if other != path and _job_of(other) == "lwdna":
                data = flags_lib.job_config(_parse(other, "lwdna")).data
                self.assertTrue(data.flip, other)

    def test_resolved_flags_are_a_valid_flagfile(self):
        path = os.path.join(ROOT, "configs", "quickstart.cfg")
        fv = _parse(path, "grafting")
        text = flags_lib.flags_text(fv)
        out = os.path.join(self.get_temp_dir(), "flags.cfg")
        with open(out, "w") as f:
            f.write(text)
        again = flags.FlagValues()
        flags_lib.define("common", "grafting", flag_values=again)
        again(["prog", f"--flagfile={out}"])
        self.assertEqual(flags_lib.job_config(again), flags_lib.job_config(fv))

    def test_trailing_comment_is_rejected(self):
        path = os.path.join(self.get_temp_dir(), "bad.cfg")
        with open(path, "w") as f:
            f.write("# fine\n--epochs=3\n--workdir=/tmp/x  # where\n")
        with self.assertRaisesRegex(cfg.ConfigError, r"bad.cfg:3: trailing"):
            flags_lib.check_flagfiles([f"--flagfile={path}"])

    def test_missing_flagfile_is_named(self):
        with self.assertRaisesRegex(cfg.ConfigError, "no_such.cfg"):
            flags_lib.check_flagfiles(["--flagfile=/nonexistent/no_such.cfg"])


def _cli(*args):
    return test_case.run_entry_point(*args, cwd=ROOT)


@pytest.mark.large
class CommandLineErrorsTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ("one_net", ["--num_nets=1"], "--num_nets=1"),
        ("criterion", ["--criterion=kl"], "--criterion=kl"),
        ("graft_a", ["--graft_a=2"], "--graft_a=2.0"),
        ("graft_c", ["--graft_c=-1"], "--graft_c=-1.0"),
        ("unknown_flag", ["--no_such_flag=1"], "no_such_flag"),
        ("float_type", ["--learning_rate=fast"], "learning_rate"),
        ("missing_folder", ["--dataset=folder:/nonexistent"], "/nonexistent"),
    )
    def test_one_line_error(self, extra, culprit):
        tmp = self.create_tempdir().full_path
        workdir = os.path.join(tmp, "run")
        result = _cli(
            "train.grafting",
            "--flagfile=configs/smoke.cfg",
            f"--workdir={workdir}",
            *extra,
        )
        self.assertNotEqual(result.returncode, 0)
        lines = [x for x in result.stderr.splitlines() if x.strip()]
        errors = [x for x in lines if culprit in x]
        self.assertNotEmpty(errors, result.stderr[-2000:])
        self.assertNotIn("Traceback", result.stderr)
        self.assertFalse(os.path.exists(os.path.join(workdir, "report.json")))


if __name__ == "__main__":
    tf.test.main()
