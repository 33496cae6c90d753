"""Checks `(images, labels)` arrays handed to a method's Python API."""

import numpy as np


def check_labeled_images(arg, data, model, error=ValueError):
    """`(images, labels)` as numpy arrays, checked against `model`.

    Args:
        arg: the Python argument's name, for the messages.
        data: a pair `(images [N, H, W, C], int labels [N])`.
        model: the Keras model the images feed (input shape, classes).
        error: the exception class to raise (a `ValueError` subclass).

    Returns:
        `(images, int32 labels)`; the images keep their dtype.

    Raises:
        error: one line naming `arg` and what is wrong.
    """
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise error(
            f"{arg} must be a pair (images, labels) of arrays. Received: "
            f"{type(data).__name__}"
        )
    images, labels = np.asarray(data[0]), np.asarray(data[1])
    want = tuple(model.inputs[0].shape[1:])
    if images.ndim != 4 or tuple(images.shape[1:]) != want:
        raise error(
            f"{arg} images must be [N, {', '.join(map(str, want))}] for "
            f"model '{model.name}'. Received: shape {images.shape}"
        )
    if labels.shape != (images.shape[0],):
        raise error(
            f"{arg} needs one int label per image. Received: "
            f"{images.shape[0]} images, labels of shape {labels.shape}"
        )
    if images.shape[0] < 1:
        raise error(f"{arg} is empty")
    if not np.issubdtype(labels.dtype, np.integer):
        raise error(
            f"{arg} labels must be ints. Received: dtype {labels.dtype}"
        )
    classes = int(model.outputs[0].shape[-1])
    if labels.min() < 0 or labels.max() >= classes:
        raise error(
            f"{arg} labels must lie in [0, {classes}) (the model's "
            f"outputs). Received: [{labels.min()}, {labels.max()}]"
        )
    return images, labels.astype(np.int32)
