"""SavedModel export: raw images in, logits out, no tfgraft needed to serve.

Every tfgraft model starts with `Standardize`, so the exported graph takes
raw 0-255 images and normalises them itself. Two endpoints are written:

* `serve(images: float32[None, H, W, 3]) -> float32 logits` (also the
  `serving_default` signature);
* `serve_uint8(images: uint8[None, H, W, 3]) -> float32 logits`.

The loaded object also has `variables`, `trainable_variables` and
`non_trainable_variables` (named as the Keras weights' paths).

How it is fast: `Exporter` saves a small `_Servable` (plain `tf.Variable`
copies of the weights and two `tf.function`s running
`model.stateless_call` on them) instead of the model, traced once per
architecture; each further net of that architecture only assigns its
weights (README, Performance).

The export lands in a temporary folder that is renamed into place once
complete, so a crash never leaves a half-written SavedModel; a failed
write (a full disk) removes it and raises `io.WriteError` naming `path`.
"""

import json
import time

import tensorflow as tf

from tfgraft import io
from tfgraft import points


class ExportError(ValueError):
    """The export path or model is unusable; the message names it."""


def _image_shape(model):
    """`[None, H, W, C]` of the model's one NHWC image input."""
    shape = model.inputs[0].shape if model.inputs else None
    if shape is None or len(shape) != 4 or len(model.inputs) != 1:
        raise ExportError(
            f"export needs a model with one NHWC image input; "
            f"{model.name} has input shape {shape}"
        )
    return [None] + list(shape[1:])


def _architecture(model):
    """A key equal for models that compute the same function of their
    weights: the Keras config (less the model's own name) and the
    weights' paths, shapes and dtypes. None (never shared) when the config
    is not plain JSON."""
    try:
        config = dict(model.get_config())
        config.pop("name", None)
        text = json.dumps(config, sort_keys=True)
    except (NotImplementedError, TypeError, ValueError):
        return None
    weights = tuple(
        (v.path, tuple(v.shape), str(v.dtype), bool(v.trainable))
        for v in model.variables
    )
    return (type(model).__module__, type(model).__qualname__, text, weights)


class _Servable(tf.__internal__.tracking.AutoTrackable):
    """What is written: weight copies and the two serving functions.

    The Keras model itself is not tracked (its layers would add hundreds
    of trackable nodes and a second copy of every variable); the serving
    functions read only this object's variables.
    """

    def __init__(self, model, on_trace):
        with tf.init_scope():
            trainable = [
                tf.Variable(v.numpy(), name=v.path, trainable=True)
                for v in model.trainable_variables
            ]
            non_trainable = [
                tf.Variable(v.numpy(), name=v.path, trainable=False)
                for v in model.non_trainable_variables
            ]
        self.trainable_variables = trainable
        self.non_trainable_variables = non_trainable
        self.variables = trainable + non_trainable

        def logits(images):
            on_trace()
            out, _ = model.stateless_call(
                trainable, non_trainable, images, training=False
            )
            return tf.cast(out, tf.float32)

        shape = _image_shape(model)
        self.serve = tf.function(
            lambda images: logits(images),
            input_signature=[tf.TensorSpec(shape, tf.float32)],
        )
        # Calls `serve` (one traced graph of the model, not two).
        self.serve_uint8 = tf.function(
            lambda images: self.serve(tf.cast(images, tf.float32)),
            input_signature=[tf.TensorSpec(shape, tf.uint8)],
        )

    def load_weights_of(self, model):
        """Assigns `model`'s weights (same architecture) to the copies."""
        theirs = model.trainable_variables + model.non_trainable_variables
        for v, w in zip(self.variables, theirs):
            v.assign(w.numpy())

    def signatures(self):
        # The functions, not concrete functions: `tf.saved_model.save`
        # traces them inside its save context (a separate trace cache
        # entry), so getting concrete functions here would trace twice.
        return {
            "serve": self.serve,
            "serve_uint8": self.serve_uint8,
            "serving_default": self.serve,
        }


class Exporter:
    """Writes SavedModels, tracing the serving graph once per architecture.

    Keep one `Exporter` for a group of exports (a run's nets): a model
    whose architecture (Keras config and weight shapes) matches an
    earlier one reuses that one's traced functions with its own weights.

    Attributes:
        traces: how many times a serving function was traced (two per
            architecture: `serve` and `serve_uint8`).
        seconds: `{path: seconds}` of each finished export.

    Example:

        exporter = Exporter()
        for i, net in enumerate(nets):
            exporter.export(net, f"export/net_{i}")
    """

    def __init__(self):
        self.traces = 0
        self.seconds = {}
        self._servables = {}

    def _count_trace(self):
        self.traces += 1

    def _servable(self, model):
        key = _architecture(model)
        servable = self._servables.get(key)  # None is never a key
        if servable is None:
            servable = _Servable(model, self._count_trace)
            if key is not None:
                self._servables[key] = servable
        else:
            servable.load_weights_of(model)
        return servable

    def export(self, model, path, *, overwrite=False):
        """Writes `model` as a servable SavedModel at `path`.

        Args:
            model: a Keras model taking `(batch, H, W, 3)` raw images.
            path: destination folder; must not exist unless `overwrite`.
            overwrite: replace an existing export (atomically).

        Returns:
            `path`.
        """
        t0 = time.perf_counter()
        _image_shape(model)
        servable = self._servable(model)
        signatures = servable.signatures()
        try:
            with io.atomic_directory(path, overwrite=overwrite) as tmp:
                tf.saved_model.save(servable, tmp, signatures=signatures)
                points.reach("export.before_rename")
        except FileExistsError:
            raise ExportError(
                f"export path {path} exists; remove it or choose another"
            ) from None
        except (OSError, tf.errors.OpError) as e:
            # A full disk surfaces as ResourceExhaustedError from TF's file
            # layer; the temporary folder is already gone, `path` untouched.
            raise io.write_error(path, e) from None
        self.seconds[path] = time.perf_counter() - t0
        return path


def export_saved_model(model, path, *, overwrite=False, exporter=None):
    """`Exporter.export(model, path, overwrite=overwrite)` of `exporter`
    (one to reuse traced graphs from, for several nets of one
    architecture; default a new one); returns `path`."""
    exporter = Exporter() if exporter is None else exporter
    return exporter.export(model, path, overwrite=overwrite)
