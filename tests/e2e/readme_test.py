"""Every ```python block of README.md runs as written.

The blocks run in README order, each in a fresh namespace, all in one
temporary working directory (so a block may read what an earlier block
wrote there, as a reader following the README would). `ADAPTATIONS` lists,
per block, the only changes the test makes and why: smaller data and nets
where the README shows a real recipe, and the run directory an earlier block
wrote where the README refers to one of its own. Each replaced text must
occur exactly once, so a README edit that drops it fails here instead of
silently running something else. Substitutions keep the line count, so a
traceback names the README's own line.
"""

import dataclasses
import os
import re

import keras
import pytest
import tensorflow as tf

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
README = os.path.join(ROOT, "README.md")


@dataclasses.dataclass(frozen=True)
class Adaptation:
    """How one README block runs in the test.

    Attributes:
        starts_with: the block's first line (checks the table still lines up
            with the README).
        substitutions: `(old, new, why)` text replacements, each on one line.
    """

    starts_with: str
    substitutions: tuple = ()


ADAPTATIONS = (
    # "Using tfgraft from Python": grafting your own Keras models. As written.
    Adaptation(starts_with="import keras"),
    # A whole grafting job from Python.
    Adaptation(
        starts_with="from tfgraft import config",
        substitutions=(
            (
                'dataset="folder:../shared/data/cifar10-small"',
                'dataset="synthetic", batch_size=32, '
                "synthetic_train_size=64, synthetic_test_size=32",
                "no image folder in a fresh clone; a tiny synthetic set",
            ),
            (
                'name="resnet20"',
                'name="resnet20", width_mult=0.25',
                "a quarter-width ResNet-20 keeps the test cheap",
            ),
            (
                "epochs=30",
                "epochs=2, progress=False",
                "two epochs (one graft between them), no progress bar",
            ),
        ),
    ),
    # "Grafting with model.fit": your own models under one model.fit.
    Adaptation(
        starts_with="import keras\nimport tensorflow as tf",
        substitutions=(
            (
                "synthetic.generate(1024, seed=0)",
                "synthetic.generate(256, seed=0)",
                "a quarter of the images keeps the test cheap",
            ),
            (
                "epochs=30",
                "epochs=2",
                "two epochs: one graft between them, none after the last",
            ),
            ("verbose=2", "verbose=0", "no per-epoch lines in test output"),
        ),
    ),
    # "Export and serving": loads a run's best export.
    Adaptation(
        starts_with="import numpy as np",
        substitutions=(
            (
                "runs/quickstart/export/best",
                "runs/mine/export/best",
                "the run the previous block wrote (no quick start here)",
            ),
        ),
    ),
    # "Stripe pruning with model.fit": wrap, fit, strip.
    Adaptation(
        starts_with="import keras",
        substitutions=(
            (
                "synthetic.generate(2048, seed=0)",
                "synthetic.generate(128, seed=0)",
                "128 images are enough to run every step",
            ),
            (
                "epochs=10)",
                "epochs=1, verbose=0)",
                "one quiet epoch",
            ),
        ),
    ),
    # "EKG and LW-DNA on your own model": search_subnet, KnowledgeModel.
    Adaptation(
        starts_with="import keras",
        substitutions=(
            (
                "synthetic.generate(2048, seed=0)",
                "synthetic.generate(256, seed=0)",
                "256 images: a 64-image search set, 192 to fine-tune on",
            ),
            ("epochs=5)", "epochs=1, verbose=0)", "one quiet epoch"),
            (
                "images[-320:], labels[-320:]",
                "images[-64:], labels[-64:]",
                "a smaller search set",
            ),
            (
                "images[:-320], labels[:-320]",
                "images[:-64], labels[:-64]",
                "the rest",
            ),
            ("epochs=10)", "epochs=1, verbose=0)", "one quiet epoch"),
        ),
    ),
    # The same section: derive_widths.
    Adaptation(
        starts_with="import keras",
        substitutions=(
            (
                "synthetic.generate(2048, seed=0)",
                "synthetic.generate(256, seed=0)",
                "two search steps and one epoch need few images",
            ),
            ("epochs=10)", "epochs=1, verbose=0)", "one quiet epoch"),
        ),
    ),
)


def python_blocks(text):
    """`[(first line number, code)]` of the ```python blocks of `text`."""
    blocks = []
    for match in re.finditer(
        r"^```python\n(.*?)^```\s*$", text, flags=re.DOTALL | re.MULTILINE
    ):
        first_line = text.count("\n", 0, match.start(1)) + 1
        blocks.append((first_line, match.group(1)))
    return blocks


def adapt(code, adaptation):
    for old, new, why in adaptation.substitutions:
        if code.count(old) != 1:
            raise AssertionError(
                f"README block '{adaptation.starts_with}': the test replaces "
                f"{old!r} ({why}), found {code.count(old)} times"
            )
        if "\n" in old or "\n" in new:
            raise AssertionError(f"substitutions stay on one line: {old!r}")
        code = code.replace(old, new)
    return code


class PythonBlocksTest(tf.test.TestCase):
    def test_parser_finds_blocks_and_lines(self):
        text = "a\n```python\nx = 1\ny = 2\n```\n```sh\nls\n```\n"
        self.assertEqual(python_blocks(text), [(3, "x = 1\ny = 2\n")])

    def test_substitution_must_match_once(self):
        adaptation = Adaptation("x", (("epochs=30", "epochs=1", "why"),))
        self.assertEqual(adapt("f(epochs=30)\n", adaptation), "f(epochs=1)\n")
        with self.assertRaisesRegex(AssertionError, "found 0 times"):
            adapt("f(epochs=3)\n", adaptation)

    def test_every_block_has_an_adaptation(self):
        with open(README) as f:
            blocks = python_blocks(f.read())
        self.assertLen(
            blocks,
            len(ADAPTATIONS),
            "every ```python block of README.md needs an ADAPTATIONS entry",
        )
        for (line, code), adaptation in zip(blocks, ADAPTATIONS):
            self.assertTrue(
                code.startswith(adaptation.starts_with),
                f"README.md line {line}: block starts with "
                f"{code.splitlines()[0]!r}, ADAPTATIONS expects "
                f"{adaptation.starts_with!r}",
            )


@pytest.mark.large
class ReadmeTest(tf.test.TestCase):
    def test_python_blocks_run(self):
        with open(README) as f:
            blocks = python_blocks(f.read())
        self.assertLen(blocks, len(ADAPTATIONS))
        workdir = self.create_tempdir().full_path
        cwd = os.getcwd()
        os.chdir(workdir)
        try:
            for (line, code), adaptation in zip(blocks, ADAPTATIONS):
                code = adapt(code, adaptation)
                # Padding makes traceback line numbers the README's.
                compiled = compile(
                    "\n" * (line - 1) + code, README, "exec"
                )
                namespace = {"__name__": "__readme__"}
                exec(compiled, namespace)  # noqa: S102
                self._check(line, namespace)
        finally:
            os.chdir(cwd)

    def _check(self, line, namespace):
        # Each block's result, checked beyond "it ran".
        if "grafter" in namespace:
            alphas = namespace["alphas"].numpy()
            self.assertEqual(alphas.shape, (2,))
            self.assertTrue(all(0.3 <= a <= 0.7 for a in alphas), alphas)
            # Two nets on a ring blend into one: alpha(d) + alpha(-d) = 1.
            a, b = namespace["nets"]
            for x, y in zip(a.weights, b.weights):
                self.assertAllClose(x.numpy(), y.numpy(), atol=1e-5)
        if "report" in namespace:
            report = namespace["report"]
            self.assertEqual(report["num_nets"], 2)
            self.assertTrue(os.path.isdir("runs/mine/export/best"))
        if "streams" in namespace:
            logs = namespace["history"].history
            for key in ("net_0_loss", "net_1_accuracy", "val_net_1_loss"):
                self.assertLen(logs[key], 2)
            self.assertLen(logs["val_ensemble_accuracy"], 2)
            # One graft, after epoch 1 (none after the last epoch).
            self.assertEqual(logs["grafts"], [1, 1])
            self.assertEqual(namespace["model"].graft_callback.grafts, 1)
            probs = namespace["probs"]
            self.assertEqual(probs.shape, (8, 10))
            self.assertAllClose(probs.sum(-1), [1.0] * 8, atol=1e-5)
            for i in range(2):
                self.assertTrue(os.path.isdir(f"runs/fit/net_{i}"))
        if "logits" in namespace:
            self.assertEqual(tuple(namespace["logits"].shape), (4, 10))
        if "result" in namespace:
            # The compact model computes what the hard-masked one does,
            # with fewer FLOPs.
            result = namespace["result"]
            pff = result.complexity["pff"]
            self.assertLess(pff["after"]["flops"], pff["before"]["flops"])
            x = namespace["images"][:4].astype("float32")
            self.assertAllClose(
                result.model(x), result.masked(x), rtol=1e-4, atol=1e-4
            )
            self.assertTrue(os.path.isfile("compact.keras"))
        if "subnet" in namespace:
            # EKG: the target is met; the saved compact net is the trained
            # student.
            subnet = namespace["subnet"]
            self.assertLessEqual(subnet.flops_rate, 0.45)
            self.assertLess(
                subnet.params["ekg"]["after"], subnet.params["ekg"]["before"]
            )
            x = namespace["images"][:4].astype("float32")
            saved = keras.saving.load_model("ekg_compact.keras")
            self.assertAllClose(
                saved(x, training=False),
                subnet.model(x, training=False),
                atol=1e-5,
            )
        if "lw" in namespace:
            # LW-DNA: the derived net costs what the table said, widened
            # ~4x and shrunk back.
            lw = namespace["lw"]
            flops = lw.flops
            self.assertGreater(flops["widened"], 3 * flops["original"])
            self.assertAllClose(
                flops["derived"] / flops["widened"], lw.threshold.ratio
            )


if __name__ == "__main__":
    tf.test.main()
