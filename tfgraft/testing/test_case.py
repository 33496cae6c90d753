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
