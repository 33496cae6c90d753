"""train/startup.py: which start-up lines of TensorFlow a run shows."""

import os

import tensorflow as tf

from train import startup

_IMPORT = (
    "/x/y.py:3: UserWarning: something a user should see\n"
    "WARNING: All log messages before absl::InitializeLog() is called are "
    "written to STDERR\n"
    "I0000 00:00:1796519732.997615   28609 port.cc:153] oneDNN custom "
    "operations are on.\n"
    "I0000 00:00:1796519780.272320   28897 cpu_feature_guard.cc:227] This "
    "TensorFlow binary is optimized\n"
    "To enable the following instructions: AVX2 FMA, rebuild TensorFlow.\n"
    "W0000 00:00:1796519732.997934   28609 some.cc:31] a warning\n"
    "E0000 00:00:1796519736.198858   28609 cuda_platform.cc:52] failed call "
    "to cuInit: INTERNAL: CUDA error\n"
    "E0000 00:00:1796519736.198858   28609 other.cc:52] a real error\n"
)


class FilterStartupTest(tf.test.TestCase):
    def test_default_keeps_errors_and_python_lines_only(self):
        self.assertEqual(
            startup.filter_startup(_IMPORT),
            "/x/y.py:3: UserWarning: something a user should see\n"
            "E0000 00:00:1796519736.198858   28609 other.cc:52] a real "
            "error\n",
        )

    def test_a_level_the_user_set_is_followed_cuinit_included(self):
        kept = startup.filter_startup(_IMPORT, user_level="1")
        self.assertIn("a warning", kept)
        self.assertIn("failed call to cuInit", kept)
        self.assertNotIn("oneDNN", kept)
        # The INFO record's continuation line goes with it.
        self.assertNotIn("To enable", kept)
        self.assertNotIn("absl::InitializeLog", kept)
        everything = startup.filter_startup(_IMPORT, user_level="0")
        self.assertIn("oneDNN", everything)
        self.assertIn("To enable the following instructions", everything)


class EntryModuleTest(tf.test.TestCase):
    def test_module_of_dash_m(self):
        cases = [
            (["python", "-m", "train.grafting", "--x=1"], "train.grafting"),
            (["python", "-u", "-mtrain.baseline"], "train.baseline"),
            (["python", "script.py", "-m", "train.x"], None),
            (["python", "-c", "import train"], None),
            (["python"], None),
        ]
        for argv, module in cases:
            self.assertEqual(startup.entry_module(argv), module, argv)

    def test_job_of_every_spelling(self):
        # (sys.orig_argv, sys.argv, expected): under `-m`, sys.argv[0] is
        # the module's file and the rest are its arguments.
        cases = [
            (["python", "-m", "train.grafting", "--x=1"],
             ["grafting.py", "--x=1"], ("train.grafting", ["--x=1"])),
            (["python", "-m", "tfgraft.train.stripe", "--y"],
             ["stripe.py", "--y"], ("train.stripe", ["--y"])),
            (["python", "-m", "train", "ekg", "--z"],
             ["__main__.py", "ekg", "--z"], ("train.ekg", ["--z"])),
            (["python", "-m", "tfgraft.train", "lwdna"],
             ["__main__.py", "lwdna"], ("train.lwdna", [])),
            (["python", "/v/bin/tfgraft-train", "baseline", "--a"],
             ["/v/bin/tfgraft-train", "baseline", "--a"],
             ("train.baseline", ["--a"])),
            (["python", "-m", "pytest", "tests"], ["pytest", "tests"],
             (None, None)),
            (["python", "script.py"], ["script.py"], (None, None)),
        ]
        for orig_argv, argv, want in cases:
            self.assertEqual(startup.entry_job(orig_argv, argv), want, orig_argv)


class TfLogRequestedTest(tf.test.TestCase):
    def test_command_line_and_nested_flagfiles_last_wins(self):
        folder = self.create_tempdir().full_path
        inner = os.path.join(folder, "inner.cfg")
        outer = os.path.join(folder, "outer.cfg")
        with open(inner, "w") as f:
            f.write("# comment\n--tf_log\n")
        with open(outer, "w") as f:
            f.write(f"--flagfile={inner}\n--epochs=2\n")
        self.assertFalse(startup.tf_log_requested(["--epochs=2"]))
        self.assertTrue(startup.tf_log_requested(["--tf_log"]))
        self.assertTrue(startup.tf_log_requested([f"--flagfile={outer}"]))
        self.assertFalse(
            startup.tf_log_requested([f"--flagfile={outer}", "--notf_log"])
        )
        self.assertFalse(startup.tf_log_requested(["--tf_log=false"]))
        # A missing flagfile is the flag parser's error, not start-up's.
        self.assertFalse(startup.tf_log_requested(["--flagfile=/no/such"]))


if __name__ == "__main__":
    tf.test.main()
