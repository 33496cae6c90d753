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

from tfgraft import config as cfg
from tfgraft import data as data_lib
from tfgraft import errors
from tfgraft import export
from tfgraft import io
from tfgraft.training import evaluation

from . import flags as flags_lib

_SAVED_MODEL = flags.DEFINE_string("saved_model", None, "SavedModel folder.")
# The data knobs of the training jobs (the seed: the synthetic set's).
for _name in flags_lib.define_knobs(
    cfg.DataConfig,
    (
        "dataset",
        "data_dir",
        "eval_batch_size",
        "synthetic_train_size",
        "synthetic_test_size",
    ),
) + flags_lib.define_knobs(cfg.RunConfig, ("seed",)):
    flags.declare_key_flag(_name)
_SPLIT = flags.DEFINE_enum("split", "test", ["test", "train"], "Split.")
_OUTPUT = flags.DEFINE_string(
    "output", None, "Result JSON (default: <saved_model>.eval.json)."
)


def main(argv):
    del argv
    path = _SAVED_MODEL.value
    d = flags_lib.section_from_flags(cfg.DataConfig)
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise export.ExportError(f"--saved_model={path}: no saved_model.pb")
    try:
        model = tf.saved_model.load(path)
    except (OSError, ValueError, IndexError, tf.errors.OpError) as e:
        # A damaged or foreign file: one line, not the loader's traceback
        # (a truncated variables file raises IndexError "Read less bytes
        # than requested" from the C++ reader).
        raise export.ExportError(
            f"--saved_model={path}: cannot load ({io.first_line(e)})"
        ) from None
    if not hasattr(model, "serve"):
        raise export.ExportError(f"--saved_model={path}: no `serve` endpoint")
    seed = flags_lib.section_from_flags(cfg.RunConfig).seed
    source = data_lib.source_for(d, seed)
    want = tuple(model.serve.input_signature[0].shape[1:])
    have = tuple(source.info.image_shape)
    if None not in want and want != have:
        raise export.ExportError(
            f"--saved_model={path} takes {want} images but --dataset="
            f"{d.dataset} gives {have}"
        )
    with errors.flag_names(batch_size="eval_batch_size"):
        ds = data_lib.eval_dataset(
            source, batch_size=d.eval_batch_size, split=_SPLIT.value
        )
    result = evaluation.evaluate(model.serve, ds)
    result.update(
        saved_model=os.path.abspath(path),
        dataset=d.dataset,
        split=_SPLIT.value,
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
