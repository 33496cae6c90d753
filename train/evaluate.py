"""Evaluates an exported SavedModel on a dataset (top-1 / top-5).

Uses only `tf.saved_model.load` and the model's `serve` signature, exactly
as a serving user would; prints the result and writes it as JSON.

Example:

    python -m train.evaluate --saved_model=runs/quickstart/export/best \
        --dataset=synthetic
"""

import os

import tensorflow as tf
from absl import flags

from tfgraft import data as data_lib
from tfgraft import export
from tfgraft import io
from tfgraft.training import evaluation

from . import flags as flags_lib

_SAVED_MODEL = flags.DEFINE_string("saved_model", None, "SavedModel folder.")
_DATASET = flags.DEFINE_string(
    "dataset", "synthetic", "synthetic | tfds:<name> | folder:<path>."
)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data folder.")
_SPLIT = flags.DEFINE_enum("split", "test", ["test", "train"], "Split.")
_BATCH = flags.DEFINE_integer(
    "eval_batch_size", 100, "Batch size.", lower_bound=1
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the synthetic data set.")
_SYN_TRAIN = flags.DEFINE_integer(
    "synthetic_train_size", 10000, "Synthetic train images."
)
_SYN_TEST = flags.DEFINE_integer(
    "synthetic_test_size", 2000, "Synthetic test images."
)
_OUTPUT = flags.DEFINE_string(
    "output", None, "Result JSON (default: <saved_model>.eval.json)."
)


def evaluate(serve, dataset):
    """Top-1/top-5 (and mean CE) of a `serve` function over a dataset."""
    return evaluation.evaluate(serve, dataset)


def main(argv):
    del argv
    path = _SAVED_MODEL.value
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise export.ExportError(f"--saved_model={path}: no saved_model.pb")
    try:
        model = tf.saved_model.load(path)
    except (OSError, ValueError, IndexError, tf.errors.OpError) as e:
        # A damaged or foreign file: one line, not the loader's traceback
        # (a truncated variables file raises IndexError "Read less bytes
        # than requested" from the C++ reader).
        lines = str(e).strip().splitlines() or [type(e).__name__]
        raise export.ExportError(
            f"--saved_model={path}: cannot load ({lines[0]})"
        ) from None
    if not hasattr(model, "serve"):
        raise export.ExportError(f"--saved_model={path}: no `serve` endpoint")
    source = data_lib.load_source(
        _DATASET.value,
        data_dir=_DATA_DIR.value,
        synthetic_train_size=_SYN_TRAIN.value,
        synthetic_test_size=_SYN_TEST.value,
        seed=_SEED.value,
    )
    spec = model.serve.input_signature[0]
    want = tuple(spec.shape[1:])
    have = tuple(source.info.image_shape)
    if None not in want and want != have:
        raise export.ExportError(
            f"--saved_model={path} takes {want} images but --dataset="
            f"{_DATASET.value} gives {have}"
        )
    ds = data_lib.eval_dataset(
        source, batch_size=_BATCH.value, split=_SPLIT.value
    )
    result = evaluate(model.serve, ds)
    result.update(
        {
            "saved_model": os.path.abspath(path),
            "dataset": _DATASET.value,
            "split": _SPLIT.value,
        }
    )
    out = _OUTPUT.value or os.path.abspath(path).rstrip("/") + ".eval.json"
    io.atomic_write_json(out, result)
    print(
        f"top1: {result['top1']:.4f}  top5: {result['top5']:.4f}  "
        f"({result['count']} images)  -> {out}"
    )


if __name__ == "__main__":
    flags.mark_flags_as_required(["saved_model"])
    flags_lib.run(main)
