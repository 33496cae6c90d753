"""SavedModel export: raw images in, logits out, no tfgraft needed to serve.

Every tfgraft model starts with `Standardize`, so the exported graph takes
raw 0-255 images and normalises them itself. Two endpoints are written:

* `serve(images: float32[None, H, W, 3]) -> float32 logits` (also the
  `serving_default` signature);
* `serve_uint8(images: uint8[None, H, W, 3]) -> float32 logits`.

The export lands in a temporary folder that is renamed into place once
complete, so a crash never leaves a half-written SavedModel; a failed
write (a full disk) removes it and raises `io.WriteError` naming `path`.
"""

import keras
import tensorflow as tf

from tfgraft import io
from tfgraft import points


class ExportError(ValueError):
    """The export path or model is unusable; the message names it."""


def export_saved_model(model, path, *, overwrite=False):
    """Writes `model` as a servable SavedModel at `path`.

    Args:
        model: a Keras model taking `(batch, H, W, 3)` raw images.
        path: destination folder; must not exist unless `overwrite`.
        overwrite: replace an existing export (atomically).

    Returns:
        `path`.
    """
    shape = model.inputs[0].shape if model.inputs else None
    if shape is None or len(shape) != 4:
        raise ExportError(
            f"export needs a model with one NHWC image input; "
            f"{model.name} has input shape {shape}"
        )
    image_shape = [None] + list(shape[1:])

    def logits(images):
        return tf.cast(model(images, training=False), tf.float32)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve",
        lambda images: logits(images),
        input_signature=[tf.TensorSpec(image_shape, tf.float32)],
    )
    archive.add_endpoint(
        "serve_uint8",
        lambda images: logits(tf.cast(images, tf.float32)),
        input_signature=[tf.TensorSpec(image_shape, tf.uint8)],
    )
    try:
        with io.atomic_directory(path, overwrite=overwrite) as tmp:
            archive.write_out(tmp, verbose=False)
            points.reach("export.before_rename")
    except FileExistsError:
        raise ExportError(
            f"export path {path} exists; remove it or choose another"
        ) from None
    except (OSError, tf.errors.OpError) as e:
        # A full disk surfaces as ResourceExhaustedError from TF's file
        # layer; the temporary folder is already gone, `path` untouched.
        raise io.write_error(path, e) from None
    return path
