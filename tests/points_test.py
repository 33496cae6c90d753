"""tfgraft/points.py: named points and their callbacks; fault injection."""

import os
import subprocess
import sys
from unittest import mock

import tensorflow as tf

from tfgraft import io
from tfgraft import points
from tfgraft.testing import faults

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class PointsTest(tf.test.TestCase):
    def test_callbacks_see_each_point_in_order_until_removed(self):
        seen = []
        first = points.add(lambda name: seen.append(("first", name)))
        second = points.add(lambda name: seen.append(("second", name)))
        points.add(first)  # once only
        try:
            path = os.path.join(self.get_temp_dir(), "a.txt")
            io.atomic_write_text(path, "x")
        finally:
            points.remove(first)
        points.reach("after")
        points.remove(second)
        points.remove(second)  # not registered: ignored
        points.reach("unseen")
        self.assertEqual(
            seen,
            [
                ("first", "io.before_rename"),
                ("second", "io.before_rename"),
                ("first", "io.before_rename.a.txt"),
                ("second", "io.before_rename.a.txt"),
                ("second", "after"),
            ],
        )

    def test_a_callback_must_be_callable(self):
        with self.assertRaisesRegex(TypeError, r"callback=3 is not callable"):
            points.add(3)

    def test_faults_install_only_when_asked(self):
        asked = (faults.ENV, faults.WAIT_ENV)
        env = {k: v for k, v in os.environ.items() if k not in asked}
        with mock.patch.dict(os.environ, env, clear=True):
            self.assertFalse(faults.install())
            self.assertNotIn(faults.point, points._callbacks)

    def test_an_entry_point_installs_the_kill(self):
        # The library alone ignores TFGRAFT_KILL_AT; `train/startup.py`
        # installs it for `python -m train.<job>`, as the crash tests run:
        # the pass before it does not count, the first one after kills.
        code = (
            "import os, sys\n"
            "from train import startup\n"
            "from tfgraft import points\n"
            "points.reach('x')\n"
            "print('library alone: alive', flush=True)\n"
            "print(startup.install_faults(), flush=True)\n"
            "points.reach('x')\n"
            "print('not reached', flush=True)\n"
        )
        env = dict(os.environ, **{faults.ENV: "x:1"})
        env.pop(faults.WAIT_ENV, None)
        proc = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual(proc.returncode, -9, proc.stderr[-2000:])
        self.assertEqual(proc.stdout, "library alone: alive\nTrue\n")
