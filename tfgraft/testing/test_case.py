"""Helpers shared by the tests (no test framework imported here)."""

import keras
import numpy as np


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
