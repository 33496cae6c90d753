"""Keeps BUILD honest: every entry point has a py_binary, tests are globbed.

Also keeps tests/ mirroring the tree (tests/README.md): each of its folders
is a package of tfgraft, `train` or `e2e`, with an `__init__.py`, so test
files in different folders may share a name.

Bazel cannot resolve its rules offline on these machines (Debian's
bazel-bootstrap needs to download rules_cc and rules_python), so this test
is the check CI runs; `bazel test //...` works where Bazel has its rules.
"""

import ast
import glob
import os
import re

import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _build_text():
    with open(os.path.join(ROOT, "BUILD")) as f:
        return f.read()


def _list(text, name):
    match = re.search(rf"^{name} = (\[.*?\])", text, re.S | re.M)
    assert match, f"BUILD has no {name} list"
    return ast.literal_eval(match.group(1))


class BuildFileTest(tf.test.TestCase):
    def test_every_entry_point_has_a_binary(self):
        binaries = set(_list(_build_text(), "TRAIN_BINARIES"))
        modules = {
            os.path.basename(p)[:-3]
            for p in glob.glob(os.path.join(ROOT, "train", "*.py"))
        } - {"__init__", "__main__", "flags", "startup"}
        self.assertEqual(binaries, modules)

    def test_entry_points_run_as_modules(self):
        # train/*.py import train.flags relatively (installed, the package
        # is tfgraft.train), so Bazel must run them as modules.
        text = _build_text()
        self.assertIn('main_module = "train." + name', text)
        self.assertNotIn("main = ", text.split("py_test(")[0])
        self.assertIn('main_module = "train",', text)
        self.assertIn('srcs = ["train/__main__.py"]', text)

    def test_rules_are_loaded_explicitly(self):
        text = _build_text()
        for rule in ("py_binary", "py_library", "py_test"):
            self.assertIn(
                f'load("@rules_python//python:{rule}.bzl", "{rule}")', text
            )

    def test_library_and_tests_are_globbed(self):
        text = _build_text()
        self.assertIn('glob(["tfgraft/**/*.py"])', text)
        self.assertIn('glob(["tests/**/*_test.py"])', text)
        # Nothing importable lives outside the globbed folders.
        for path in glob.glob(
            os.path.join(ROOT, "tfgraft", "**", "*.py"), recursive=True
        ):
            self.assertTrue(path.startswith(os.path.join(ROOT, "tfgraft")))

    def test_large_tests_exist_and_are_marked(self):
        listed = _list(_build_text(), "LARGE_TESTS")
        for src in listed:
            path = os.path.join(ROOT, src)
            self.assertTrue(os.path.isfile(path), src)
            with open(path) as f:
                self.assertIn("pytest.mark.large", f.read(), src)
        marked = []
        for path in glob.glob(
            os.path.join(ROOT, "tests", "**", "*_test.py"), recursive=True
        ):
            with open(path) as f:
                if re.search(r"^\s*@pytest\.mark\.large", f.read(), re.M):
                    marked.append(os.path.relpath(path, ROOT))
        self.assertCountEqual(listed, marked)

    def test_test_folders_mirror_the_tree(self):
        tests = os.path.join(ROOT, "tests")
        self.assertTrue(os.path.isfile(os.path.join(tests, "__init__.py")))
        for folder, subfolders, files in os.walk(tests):
            subfolders[:] = [d for d in subfolders if d != "__pycache__"]
            if folder == tests:
                continue
            relative = os.path.relpath(folder, tests)
            self.assertIn("__init__.py", files, relative)
            if relative in ("e2e", "train"):
                continue
            self.assertTrue(
                os.path.isfile(
                    os.path.join(ROOT, "tfgraft", relative, "__init__.py")
                ),
                f"tests/{relative} mirrors no package of tfgraft",
            )

    def test_every_package_folder_has_init(self):
        for folder, _, files in os.walk(os.path.join(ROOT, "tfgraft")):
            if "__pycache__" in folder:
                continue
            if any(f.endswith(".py") for f in files):
                self.assertIn("__init__.py", files, folder)


if __name__ == "__main__":
    tf.test.main()
