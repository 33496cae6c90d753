"""Helpers shared by the tests (no test framework imported here).

Round trips (`keras_round_trip`, `config_round_trip`,
`saved_model_round_trip`) return what came back and leave the checks to the
test; `run_entry_point` and `error_lines` run a command as a user would and
read its one-line errors; `randomize_bn` and `mini_resnet` make small nets
whose every channel matters.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf

from tfgraft import export as export_lib


def keras_round_trip(model, directory, name="model.keras"):
    """Saves `model` as a `.keras` file and loads it back.

    Loads with `safe_mode=True` (Keras' default), so every layer must come
    back from its registered name and config alone.

    Args:
        model: the Keras model to save.
        directory: an existing folder for the file.
        name: the file's name in `directory`.

    Returns:
        The loaded model.
    """
    path = os.path.join(directory, name)
    model.save(path)
    return keras.saving.load_model(path, safe_mode=True)


def config_round_trip(layer):
    """`layer` through `serialize_keras_object`, JSON text and back.

    Fails on a config value JSON cannot hold or a class Keras cannot find
    by its registered name (what a `.keras` file's config goes through).

    Args:
        layer: a Keras layer (built or not).

    Returns:
        The new, unbuilt layer.
    """
    blob = json.dumps(keras.saving.serialize_keras_object(layer))
    return keras.saving.deserialize_keras_object(json.loads(blob))


def saved_model_round_trip(model, directory):
    """Exports `model` as users get it and loads it without tfgraft.

    Writes `directory` with `tfgraft.export.export_saved_model` and reads it
    with `tf.saved_model.load`. Keep the returned object alive while
    calling its `serve`: its functions read its variables.

    Args:
        model: a Keras model taking images.
        directory: the export folder; must not exist yet.

    Returns:
        The loaded SavedModel object (`serve(images)` gives the logits).
    """
    return tf.saved_model.load(export_lib.export_saved_model(model, directory))


def run_entry_point(module, *args, cwd, env=None, timeout=300):
    """Runs `python -m <module> <args>` in a subprocess, as a user would.

    Args:
        module: the module to run, e.g. `"train.ekg"`.
        *args: its command-line arguments.
        cwd: the folder to run in (a clone's root, for `train.*`).
        env: the environment; default this process's with
            `TF_CPP_MIN_LOG_LEVEL=3`, so stderr holds only what the command
            itself prints.
        timeout: seconds before the run is killed (a hang fails the test
            instead of stopping the suite).

    Returns:
        The `subprocess.CompletedProcess`, with `stdout` and `stderr` as
        text.
    """
    if env is None:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def error_lines(stderr):
    """The lines of a command's `stderr` that start with `error:`."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def numpy_conv2d(x, kernel, stride=1, pads=None):
    """The NumPy reference a conv layer is checked against.

    Cross-correlation of NHWC `x` with an HWIO `kernel` after explicit zero
    padding, as PyTorch and the papers define it; accumulates in float64.

    Args:
        x: input, `(batch, height, width, in_channels)`.
        kernel: `(kh, kw, in_channels, out_channels)`.
        stride: the same stride along height and width.
        pads: `(top, bottom, left, right)` zeros; default `'same'` for an
            odd kernel at stride 1 (`kh // 2` and `kw // 2` on each side).

    Returns:
        `(batch, out_height, out_width, out_channels)` float64 array.
    """
    kh, kw, _, out = kernel.shape
    if pads is None:
        pads = (kh // 2, kh // 2, kw // 2, kw // 2)
    top, bottom, left, right = pads
    x = np.pad(x, [(0, 0), (top, bottom), (left, right), (0, 0)])
    ho = (x.shape[1] - kh) // stride + 1
    wo = (x.shape[2] - kw) // stride + 1
    y = np.zeros((x.shape[0], ho, wo, out), np.float64)
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i : i + stride * (ho - 1) + 1 : stride]
            patch = patch[:, :, j : j + stride * (wo - 1) + 1 : stride]
            y += np.einsum("nhwc,co->nhwo", patch, kernel[i, j])
    return y


def randomize_bn(model, seed=0):
    """Gives every BatchNormalization of `model` a random, non-trivial state.

    Fresh BNs are the identity in inference mode, so a wrongly sliced or
    masked channel would not show in the logits; random gamma, beta and
    moving statistics make every channel matter. Draws per layer, in layer
    order: gamma ~ U(0.5, 1.5), beta ~ N(0, 0.3), moving mean ~ N(0, 0.3),
    moving variance ~ U(0.5, 2), from `np.random.default_rng(seed)`.
    """
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.gamma.shape
            layer.gamma.assign(rng.uniform(0.5, 1.5, shape))
            layer.beta.assign(rng.normal(0.0, 0.3, shape))
            layer.moving_mean.assign(rng.normal(0.0, 0.3, shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, shape))
    return model


def mini_resnet(seed=0, *, rescale=False, operator_add=False, name=None):
    """A small functional ResNet on 8x8x3 inputs: a stem, an identity block
    and a strided projection block (8 then 16 channels), 10 logits.

    Args:
        seed: `keras.utils.set_random_seed` before the layers are built.
        rescale: start with `Rescaling(1 / 255)` (raw-image input, as a
            user's model would).
        operator_add: join the identity block with `x + y` instead of an
            `Add` layer (both are graph nodes a method must follow).
        name: the model's name (Keras picks one when None).
    """
    keras.utils.set_random_seed(seed)
    layers = keras.layers

    def conv_bn(x, filters, strides=1, kernel=3, relu=True):
        x = layers.Conv2D(
            filters, kernel, strides, padding="same", use_bias=False
        )(x)
        x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
        return layers.ReLU()(x) if relu else x

    inputs = keras.Input((8, 8, 3))
    x = layers.Rescaling(1 / 255.0)(inputs) if rescale else inputs
    x = conv_bn(x, 8)
    y = conv_bn(conv_bn(x, 8), 8, relu=False)
    x = layers.ReLU()(x + y if operator_add else layers.Add()([x, y]))
    y = conv_bn(conv_bn(x, 16, strides=2), 16, relu=False)
    shortcut = conv_bn(x, 16, strides=2, kernel=1, relu=False)
    x = layers.ReLU()(layers.Add()([y, shortcut]))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10)(x), name=name)
