"""The built wheel runs the README's main command from any directory.

Builds a wheel from a copy of the files pyproject.toml packages (`pip wheel
--no-deps --no-build-isolation --no-index`: no network), installs it with
`--no-deps` into a fresh virtualenv that sees this environment's packages
through a `.pth` file (its dependencies, not the clone's tfgraft), and from
an empty directory runs a one-step quick start through the `tfgraft-train`
command with the clone's recipe path, which only the shipped recipes can
satisfy there.
"""

import glob
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig

import pytest
import tensorflow as tf

from train import flags as flags_lib

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# What the wheel is built from (a clone's other folders are not packaged).
PACKAGED = (
    "tfgraft",
    "train",
    "configs",
    "README.md",
    "pyproject.toml",
    "setup.py",
)
# The quick start cut to one step of two quarter-width nets.
TINY = [
    "--synthetic_train_size=32",
    "--synthetic_test_size=16",
    "--batch_size=16",
    "--eval_batch_size=16",
    "--width_mult=0.25",
    "--epochs=1",
    "--max_steps=1",
    "--strategy=default",
    "--progress=false",
]
# A recipe that includes another by its clone path (configs/<base>.cfg).
NESTED = "grafting_cifar10_resnet32_dlr"


def _run(args, cwd, env=None):
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    if result.returncode:
        raise AssertionError(
            f"{' '.join(args)} exited {result.returncode}:\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        )
    return result


class RecipeTest(tf.test.TestCase):
    """Where flagfiles are read from (in-process, the clone's recipes)."""

    def test_recipe_paths_fall_back_to_the_shipped_recipes(self):
        empty = self.create_tempdir().full_path
        cwd = os.getcwd()
        os.chdir(empty)
        try:
            by_path = flags_lib.expand_flagfiles(
                [f"--flagfile=configs/{NESTED}.cfg", "--epochs=3"]
            )
            by_name = flags_lib.expand_flagfiles([f"--recipe={NESTED}"])
        finally:
            os.chdir(cwd)
        with open(os.path.join(ROOT, "configs", NESTED + ".cfg")) as f:
            own = [
                x.strip()
                for x in f
                if x.strip() and not x.startswith(("#", "--flagfile="))
            ]
        # The base recipe's lines come first, then the recipe's, then the
        # command line's (later flags win, as with absl's --flagfile).
        self.assertEqual(by_path[-len(own) - 1 : -1], own)
        self.assertEqual(by_path[-1], "--epochs=3")
        self.assertEqual(by_name, by_path[:-1])
        self.assertIn("--graft_a=0.4", by_path)  # from the base recipe
        self.assertGreater(len(by_path), len(own) + 3)

    def test_a_local_file_wins_over_the_shipped_recipe(self):
        tmp = self.create_tempdir().full_path
        os.makedirs(os.path.join(tmp, "configs"))
        with open(os.path.join(tmp, "configs", "quickstart.cfg"), "w") as f:
            f.write("# mine\n--epochs=1\n")
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            lines = flags_lib.expand_flagfiles(
                ["--flagfile=configs/quickstart.cfg"]
            )
        finally:
            os.chdir(cwd)
        self.assertEqual(lines, ["--epochs=1"])

    def test_bad_recipes_and_cycles_are_one_line_errors(self):
        from tfgraft import config as cfg

        with self.assertRaisesRegex(cfg.ConfigError, r"--recipe=nope: no "):
            flags_lib.expand_flagfiles(["--recipe=nope"])
        with self.assertRaisesRegex(cfg.ConfigError, r"--recipe=\.\./x: no"):
            flags_lib.expand_flagfiles(["--recipe=../x"])
        tmp = self.create_tempdir().full_path
        a, b = os.path.join(tmp, "a.cfg"), os.path.join(tmp, "b.cfg")
        with open(a, "w") as f:
            f.write(f"--epochs=1\n--flagfile={b}\n")
        with open(b, "w") as f:
            f.write(f"--flagfile={a}\n")
        with self.assertRaisesRegex(cfg.ConfigError, r"b.cfg:1: .*itself"):
            flags_lib.expand_flagfiles([f"--flagfile={a}"])
        with self.assertRaisesRegex(
            cfg.ConfigError,
            r"b.cfg:1: --flagfile=configs/absent.cfg: no such file",
        ):
            with open(b, "w") as f:
                f.write("--flagfile=configs/absent.cfg\n")
            flags_lib.expand_flagfiles([f"--flagfile={a}"])


class CommandTest(tf.test.TestCase):
    """`tfgraft-train <job>` (train/__main__.py)."""

    def test_jobs_are_the_runnable_modules(self):
        from train import __main__ as command

        runnable = set()
        for path in glob.glob(os.path.join(ROOT, "train", "*.py")):
            with open(path) as f:
                if 'if __name__ == "__main__":' in f.read():
                    runnable.add(os.path.basename(path)[: -len(".py")])
        self.assertEqual(set(command.jobs()) | {"__main__"}, runnable)
        self.assertIn("grafting", command.jobs())

    def test_unknown_or_missing_job_is_one_line(self):
        from train import __main__ as command

        for argv, said in (
            (["tfgraft-train"], "error: no job;"),
            (["tfgraft-train", "graft"], "error: unknown job 'graft';"),
        ):
            stderr = self._stderr_of(command.main, argv)
            self.assertStartsWith(stderr, said)
            self.assertIn("grafting", stderr)
            self.assertLen(stderr.strip().splitlines(), 1)

    def _stderr_of(self, main, argv):
        import contextlib
        import io

        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            with self.assertRaises(SystemExit) as exit_:
                main(argv)
        self.assertEqual(exit_.exception.code, 2)
        return err.getvalue()


@pytest.mark.large
class WheelTest(tf.test.TestCase):
    def test_installed_wheel_runs_the_quick_start_anywhere(self):
        tmp = self.create_tempdir().full_path
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "PYTHONHOME")
        }
        env.update(
            PIP_DISABLE_PIP_VERSION_CHECK="1",
            PIP_NO_INDEX="1",
            TF_CPP_MIN_LOG_LEVEL="3",
        )
        src = os.path.join(tmp, "src")
        for name in PACKAGED:
            path = os.path.join(ROOT, name)
            if os.path.isdir(path):
                shutil.copytree(
                    path,
                    os.path.join(src, name),
                    ignore=shutil.ignore_patterns("__pycache__"),
                )
            else:
                shutil.copy(path, os.path.join(src, name))
        wheels = os.path.join(tmp, "wheels")
        pip = [sys.executable, "-m", "pip"]
        _run(
            [
                *pip,
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "-q",
                "-w",
                wheels,
                src,
            ],
            cwd=tmp,
            env=env,
        )
        (wheel,) = os.listdir(wheels)
        venv = os.path.join(tmp, "venv")
        _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp, env)
        python = os.path.join(venv, "bin", "python")
        _run(
            [
                *pip,
                "--python",
                python,
                "install",
                "--no-deps",
                "-q",
                os.path.join(wheels, wheel),
            ],
            cwd=tmp,
            env=env,
        )
        # This environment's packages, as plain paths: their .pth files (the
        # clone's editable tfgraft among them) are not run.
        purelib = _run(
            [
                python,
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ],
            cwd=tmp,
            env=env,
        ).stdout.strip()
        ours = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
        with open(os.path.join(purelib, "_parent_env.pth"), "w") as f:
            f.write("\n".join(sorted(ours)) + "\n")

        run_dir = os.path.join(tmp, "elsewhere")
        os.makedirs(run_dir)
        probe = _run(
            [
                python,
                "-c",
                "import importlib.util, json, tfgraft\n"
                "from tfgraft.train import flags\n"
                "print(json.dumps([tfgraft.__file__,\n"
                "  importlib.util.find_spec('train') is None,\n"
                f"  flags.expand_flagfiles(['--recipe={NESTED}'])]))",
            ],
            cwd=run_dir,
            env=env,
        )
        where, no_top_level_train, nested = json.loads(probe.stdout)
        self.assertTrue(where.startswith(venv), where)
        self.assertTrue(no_top_level_train)
        cwd = os.getcwd()
        os.chdir(ROOT)
        try:
            self.assertEqual(
                nested, flags_lib.expand_flagfiles([f"--recipe={NESTED}"])
            )
        finally:
            os.chdir(cwd)

        # README's main command, through the installed command.
        _run(
            [
                os.path.join(venv, "bin", "tfgraft-train"),
                "grafting",
                "--flagfile=configs/quickstart.cfg",
                "--workdir=run",
                *TINY,
            ],
            cwd=run_dir,
            env=env,
        )
        workdir = os.path.join(run_dir, "run")
        with open(os.path.join(workdir, "report.json")) as f:
            report = json.load(f)
        self.assertEqual(report["num_nets"], 2)
        with open(os.path.join(workdir, "config.json")) as f:
            config = json.load(f)
        # From the shipped quickstart.cfg (not on the command line).
        self.assertEqual(config["model"]["name"], "resnet20")
        self.assertTrue(config["graft"]["difflr"])
        self.assertEqual(config["data"]["synthetic_train_size"], 32)
        for net in ("net_0", "net_1", "best"):
            self.assertTrue(
                os.path.isfile(
                    os.path.join(workdir, "export", net, "saved_model.pb")
                ),
                net,
            )
        # Nothing was written next to the recipes or into the clone.
        self.assertEqual(sorted(os.listdir(run_dir)), ["run"])


if __name__ == "__main__":
    tf.test.main()
