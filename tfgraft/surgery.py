"""Rebuilding a functional Keras model with other conv widths.

The zoo rebuilds a pruned or derived network from its `ChannelConfig`
(`tfgraft.models.build_model`). A user's own functional model has no
config, so the methods that change widths (EKG extraction, LW-DNA
widening and derivation) rebuild it from its layer graph instead:
`rebuild(model, filters={conv name: width})` re-runs the graph with a copy
of every layer (from its config), `filters` changed where given. Layers
keep their names, so weights can be copied by name
(`copy_weights`) or cut to the kept channels (`sliced_weights`, which
EKG extraction and L1 pruning share); the new layers are built on the new
input shapes, so a BN, a depthwise conv or a dense layer reading narrowed
channels narrows with them.

Scope: functional and built `Sequential` models (channels last, no nested
models), the same as `tfgraft.graph.analyze`.
"""

import keras
import numpy as np

from tfgraft import graph as graph_lib
from tfgraft.models import common


class SurgeryError(ValueError):
    """A rebuild request does not fit the model; names the layer."""


def rebuild(
    model,
    *,
    filters=None,
    layer_factory=None,
    output_hook=None,
    layers=None,
    name=None,
):
    """A new functional model with `model`'s graph and fresh layers.

    Args:
        model: functional or built `Sequential` Keras model.
        filters: optional `{Conv2D layer name: output channels}`; every
            other layer keeps its configuration.
        layer_factory: optional `f(layer, config) -> layer or None`, called
            for every layer with its (updated) config; a layer it returns
            replaces the copy (e.g. LW-DNA's `HyperConv2D` for a conv).
        output_hook: optional `f(node, outputs) -> outputs`, called with
            each graph node of `model` and the new output tensors, whose
            return value the rest of the graph reads (EKG inserts its
            gates here).
        layers: optional dict, filled with `{layer name: new layer}` (keras
            ops such as `x + y` are reused as they are).
        name: the new model's name (default: `model.name`).

    Returns:
        A `keras.Model` with freshly initialised weights whose
        layers have `model`'s names; copy weights with `copy_weights` or a
        method's slicing helper.

    Raises:
        SurgeryError: `filters` names a layer that is not a Conv2D of
            `model`, or a width below 1.
        tfgraft.graph.GraphError: `model` is not a functional model.
    """
    filters = dict(filters or {})
    functional = graph_lib.functional_of(model)
    nodes = graph_lib.ordered_nodes(model)
    known = {n.operation.name: n.operation for n in nodes}
    for layer_name, width in filters.items():
        op = known.get(layer_name)
        # (A `DepthwiseConv2D` is no `Conv2D` in Keras 3.)
        if not isinstance(op, keras.layers.Conv2D):
            raise SurgeryError(
                f"filters names '{layer_name}', which is not a Conv2D layer "
                f"of model '{model.name}'"
            )
        if int(width) != width or width < 1:
            raise SurgeryError(
                f"filters['{layer_name}'] must be a positive int. "
                f"Received: {width!r}"
            )
    tensors = {}
    inputs = []
    for t in functional.inputs:
        new = keras.Input(
            shape=t.shape[1:], dtype=t.dtype, name=t._keras_history[0].name
        )
        tensors[id(t)] = new
        inputs.append(new)
    layers = {} if layers is None else layers
    for node in nodes:
        if node.is_input:
            continue
        op = node.operation
        layer = layers.get(op.name)
        if layer is None:
            layer = _new_layer(op, filters, layer_factory)
            layers[op.name] = layer
        args, kwargs = node.arguments.fill_in(tensors)
        outputs = keras.tree.flatten(layer(*args, **kwargs))
        if output_hook is not None:
            outputs = output_hook(node, outputs)
        for old, new in zip(node.outputs, outputs):
            tensors[id(old)] = new
    outputs = [tensors[id(t)] for t in functional.outputs]
    return keras.Model(
        inputs[0] if len(inputs) == 1 else inputs,
        outputs[0] if len(outputs) == 1 else outputs,
        name=name or model.name,
    )


def _new_layer(op, filters, layer_factory):
    if not isinstance(op, keras.layers.Layer):
        return op  # a keras op (`x + y`): stateless, reuse it
    config = op.get_config()
    if op.name in filters:
        config["filters"] = int(filters[op.name])
    if layer_factory is not None:
        layer = layer_factory(op, config)
        if layer is not None:
            return layer
    return type(op).from_config(config)


def copy_weights(source, target):
    """Copies every weighted layer's weights from `source` into `target`.

    Layers are matched by name; shapes must agree (same widths).

    Raises:
        SurgeryError: a layer is missing or its weights differ in shape.
    """
    for layer in target.layers:
        if not layer.weights:
            continue
        try:
            src = source.get_layer(layer.name)
        except ValueError:
            raise SurgeryError(
                f"layer '{layer.name}' of '{target.name}' is missing from "
                f"'{source.name}'"
            ) from None
        assign(layer.name, layer.weights, src.get_weights())


def assign(name, variables, values, error=SurgeryError):
    """Assigns `values` to the `variables` of layer `name`.

    Raises:
        error: the counts or shapes differ (the message names the layer).
    """
    theirs = [tuple(np.shape(v)) for v in values]
    ours = [tuple(v.shape) for v in variables]
    if ours != theirs:
        raise error(
            f"layer '{name}': weight shapes differ: {ours} in the target, "
            f"{theirs} from the source"
        )
    for variable, value in zip(variables, values):
        variable.assign(value)


def sliced_weights(layer, graph, kept, kernel=None):
    """`layer`'s weights cut to the kept channels, as numpy arrays.

    Kernels keep their kept input channels (after `Flatten` of an H x W
    map: at every position, channel fastest as NHWC flattens) and, in a
    conv, their kept filters; biases and BN tensors keep their kept output
    channels; other layers keep all. In `models.surgery_weights` order.

    Args:
        layer: a layer of the model `graph` describes, or a copy of the
            same name (e.g. EKG's masked layers).
        graph: `tfgraft.graph.analyze` of that model.
        kept: `f(group id)`: kept channel indices of that channel group,
            or None to keep all.
        kernel: the kernel to slice (default `layer.kernel`).
    """

    def indices(group):
        idx = kept(group)
        if idx is None:
            return np.arange(graph.groups[group].size)
        return np.asarray(idx, np.int64)

    node = graph.nodes.get(layer.name)
    if node is not None:
        kernel = np.asarray(layer.kernel if kernel is None else kernel)
        idx_in = indices(node.in_group)
        if node.in_spatial > 1:
            c = graph.groups[node.in_group].size
            idx_in = np.concatenate(
                [p * c + idx_in for p in range(node.in_spatial)]
            )
        if node.kind == "depthwise":
            kernel = np.take(kernel, idx_in, axis=2)
            idx_out = idx_in
        elif node.kind == "dense":
            kernel = np.take(kernel, idx_in, axis=0)
            idx_out = np.arange(kernel.shape[-1])
        else:
            idx_out = indices(node.out_group)
            kernel = np.take(np.take(kernel, idx_in, axis=2), idx_out, axis=3)
        bias = [np.asarray(layer.bias)[idx_out]] if layer.use_bias else []
        return [kernel] + bias
    if isinstance(layer, keras.layers.BatchNormalization):
        idx = indices(graph.layer_groups[layer.name][1])
        return [np.asarray(w)[idx] for w in common.surgery_weights(layer)]
    return [np.asarray(w) for w in layer.weights]


def clone(model, *, name=None):
    """A copy of `model` (same graph, layer names and weights)."""
    copy = rebuild(model, name=name)
    copy_weights(model, copy)
    return copy
