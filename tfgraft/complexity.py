"""FLOPs and parameter counters with each paper's conventions.

`count(model, convention)` walks the layer graph of a functional Keras
model (batch 1, spatial sizes from the model's static shapes or from
`input_shape`) and adds up per-layer costs. The conventions reproduce the
reference counters, so "FLOPs" means different things in each:

* `"macs"`: multiply-accumulates of convs (`k*k*C_in/groups*C_out*H*W`) and
  dense layers (`in*out`); params = every layer's trainable weights (kernels,
  biases, BN gamma/beta; BN moving statistics are not parameters).
* `"pff"` (stripe-wise pruning, METHODS §2.2): conv
  `2*kh*kw*C_in*C_out*H_out*W_out` (bias adds not counted), dense
  `2*in*out + out`, BN `2*numel(input)`, pooling `k*k*C*H_out*W_out`,
  ReLU-like layers `numel` (see `count_relu`), global pooling as the
  reference's average pool with `k = H` (see `count_global_pool`).
  Params = numel of all trainable weights (BN gamma/beta, biases, filter
  skeletons), or `layer.reference_param_count()` where a layer defines it
  (compacted stripe layers count their boolean masks, as the reference does).
* `"ekg"` (EKG, METHODS §3.2): conv `H_out*W_out*kh*kw*D_in*D_out`, params
  `kh*kw*D_in*D_out` (no bias); BN flops `2*H*W*D`, params `4*D`; dense
  flops `D_in*D_out`, params `D_in*D_out + D_out`; nothing else.
* `"dhp"` (LW-DNA, METHODS §4.3): conv MACs and dense `in*out`; params conv
  kernel (+ bias) and dense `in*out + out`; no BN, activation or pooling.

Custom layers can override the defaults with a method
`layer.complexity(convention, input_shape, output_shape)` returning
`(flops, params)` for one call, or `None` to keep the default. The shapes
have batch 1 and their last axis set to the active channel counts.

**Masked networks.** `active_channels={layer_name: (in_active,
out_active)}` counts a masked (not yet compacted) network as if its
channels were removed. Either entry may be `None` to keep the derived
value. Active counts flow along the graph: a conv's output carries its
`out_active` (default: all filters), BN/activations/pooling pass it on,
`Flatten` multiplies it by the spatial size, an element-wise merge takes the
largest of its inputs, a channel `Concatenate` sums them, and every
layer's `in_active` defaults to what reaches its input. So naming each
conv's `out_active` is enough; BN, the next conv's input and the classifier
follow.

Layers that are not convs, dense, BN, activations or pooling cost no FLOPs
(Add, padding, Flatten, Standardize, ...); in `"macs"`/`"pff"` their
trainable weights still count as params.
"""

import dataclasses
import math

import keras

from tfgraft import graph as graph_lib

CONVENTIONS = ("macs", "pff", "ekg", "dhp")

_POOLING = (
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.MaxPooling3D,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.AveragePooling3D,
)
_GLOBAL_POOLING = (
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalMaxPooling3D,
)


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """Cost of one layer (all its calls) under a convention."""

    name: str
    flops: int
    params: int


@dataclasses.dataclass(frozen=True)
class Complexity:
    """Total FLOPs and params, and the per-layer breakdown.

    Attributes:
        flops: total FLOPs (batch 1) under the convention.
        params: total parameter count under the convention.
        per_layer: `LayerCost` of every layer with non-zero flops or params,
            in topological order.
    """

    flops: int
    params: int
    per_layer: tuple[LayerCost, ...]

    def as_dict(self):
        """`{layer name: LayerCost}`."""
        return {c.name: c for c in self.per_layer}


def count(
    model,
    convention="macs",
    input_shape=None,
    *,
    active_channels=None,
    count_relu=None,
    count_global_pool=None,
):
    """Counts FLOPs and params of a functional Keras model.

    Args:
        model: functional (or built `Sequential`) channels-last Keras model.
        convention: one of `"macs"`, `"pff"`, `"ekg"`, `"dhp"` (see the
            module docstring).
        input_shape: shape of the model input, with or without the batch
            axis (a list of shapes for several inputs). Default: the model's
            own static input shape, which must then be fully defined.
        active_channels: optional `{layer name: (in_active, out_active)}`
            override for counting masked networks (module docstring). The
            names are `model`'s own: another model built by the same
            function may carry other (auto-generated) names, and unknown
            names are refused.
        count_relu: `"pff"` only. Whether activation layers (`ReLU`,
            `Activation`, ...) cost `numel` FLOPs. The reference counts
            `nn.ReLU` modules, which its VGG has while its ResNets call the
            functional ReLU. `None` (default) guesses from the model: count
            them only when it has no `Add` (or `Subtract`/`Average`) layer,
            i.e. for plain chains such as VGG.
        count_global_pool: `"pff"` only. Whether global pooling costs
            `H*W*C` (an average pool with `k = H`). The reference's VGG has
            an `AvgPool` module while its ResNets pool functionally.
            `None` (default) applies the same guess as `count_relu`.

    Returns:
        A `Complexity`.

    Raises:
        ValueError: for an unknown convention or layer name, or a model
            whose shapes are not static (pass `input_shape`).

    Example:

    >>> x = keras.Input((8, 8, 4))
    >>> y = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(x)
    >>> count(keras.Model(x, y), "macs").flops  # 3*3*4*8 * 8*8
    18432
    """
    if convention not in CONVENTIONS:
        raise ValueError(
            f"Unknown complexity convention '{convention}'. Choose one of: "
            f"{', '.join(CONVENTIONS)}."
        )
    functional = graph_lib.functional_of(model)
    nodes = graph_lib.ordered_nodes(functional)
    active_channels = dict(active_channels or {})
    names = {n.operation.name for n in nodes}
    unknown = sorted(set(active_channels) - names)
    if unknown:
        raise ValueError(
            f"active_channels names layers that are not in model "
            f"'{model.name}'. Received: {unknown}"
        )
    has_add = any(graph_lib._is_summing(n.operation) for n in nodes)
    if count_relu is None:
        count_relu = not has_add
    if count_global_pool is None:
        count_global_pool = not has_add

    shapes = _static_shapes(functional, nodes, input_shape)
    active = {}  # id(KerasTensor) -> active size of the last axis
    flops, params = {}, {}  # per layer name, in topological order
    counter = _Counter(convention, count_relu, count_global_pool)
    for node in nodes:
        if node.is_input:
            for t in node.outputs:
                active.setdefault(id(t), shapes[id(t)][-1])
            continue
        op = node.operation
        in_shapes = [shapes[id(t)] for t in node.input_tensors]
        out_shapes = [shapes[id(t)] for t in node.outputs]
        in_act = [active[id(t)] for t in node.input_tensors]
        override = active_channels.get(op.name, (None, None))
        if len(override) != 2:
            raise ValueError(
                f"active_channels['{op.name}'] must be (in_active, "
                f"out_active). Received: {override}"
            )
        out_act = _propagate(
            op,
            in_shapes,
            out_shapes,
            in_act,
            override,
            graph_lib._is_elementwise(op, node),
        )
        for t, a in zip(node.outputs, out_act):
            active[id(t)] = a
        if op.name not in flops:
            flops[op.name] = 0
            params[op.name] = None
        if not in_shapes or not out_shapes:
            continue
        a_in = override[0] if override[0] is not None else in_act[0]
        in_shape = in_shapes[0][:-1] + (a_in,)
        out_shape = out_shapes[0][:-1] + (out_act[0],)
        f, p = counter.layer(op, in_shape, out_shape)
        flops[op.name] += int(f)
        if params[op.name] is None:
            params[op.name] = int(p)  # shared layers own their weights once
    per_layer = tuple(
        LayerCost(n, flops[n], params[n] or 0)
        for n in flops
        if flops[n] or params[n]
    )
    return Complexity(
        flops=sum(c.flops for c in per_layer),
        params=sum(c.params for c in per_layer),
        per_layer=per_layer,
    )


class ChannelFlops:
    """FLOPs of a model as a function of the channels kept per group.

    Under `"ekg"` and `"dhp"` a layer's count is bilinear in its active
    input and output channels, so any widths' count is each layer's full
    count scaled by its kept fractions: microseconds for what
    `count(model, convention, active_channels=...)` gives.

    Args:
        cost: `count(model, convention)` of the full model.
        layers: `{layer name: (in key, C_in, out key, C_out)}` of the
            layers whose count scales with the channels kept under a key
            (None: that side stays whole); every other layer's count is a
            constant.

    Attributes:
        constant: the FLOPs of the other layers.
    """

    def __init__(self, cost, layers):
        self.constant = 0
        self._terms = []
        for c in cost.per_layer:
            if c.name not in layers:
                self.constant += c.flops
                continue
            key_in, c_in, key_out, c_out = layers[c.name]
            if c.flops % (c_in * c_out):
                raise ValueError(
                    f"FLOPs of layer '{c.name}' are not bilinear in its "
                    "channels; cannot model them"
                )
            unit = c.flops // (c_in * c_out)
            self._terms.append((unit, key_in, c_in, key_out, c_out))

    def flops(self, kept):
        """FLOPs with `kept[key]` channels under every key."""
        total = self.constant
        for unit, key_in, c_in, key_out, c_out in self._terms:
            a = c_in if key_in is None else kept[key_in]
            b = c_out if key_out is None else kept[key_out]
            total += unit * a * b
        return int(total)


# === Shapes and active channels ===


def _static_shapes(functional, nodes, input_shape):
    """`{id(KerasTensor): shape without batch}` for every graph tensor."""
    shapes = {}
    if input_shape is None:
        for node in nodes:
            for t in list(node.input_tensors) + list(node.outputs):
                shapes[id(t)] = tuple(t.shape[1:])
    else:
        shapes = _propagate_shapes(functional, nodes, input_shape)
    for key, shape in shapes.items():
        if any(d is None for d in shape):
            raise ValueError(
                f"Model '{functional.name}' has a dynamic shape {shape}; "
                "pass input_shape to tfgraft.complexity.count."
            )
    return shapes


def _propagate_shapes(functional, nodes, input_shape):
    inputs = functional.inputs
    if len(inputs) == 1 and input_shape and isinstance(input_shape[0], int):
        input_shape = [input_shape]
    if len(input_shape) != len(inputs):
        raise ValueError(
            f"Model '{functional.name}' has {len(inputs)} inputs. "
            f"Received: input_shape={input_shape}"
        )
    specs = {}
    for t, shape in zip(inputs, input_shape):
        shape = tuple(shape)
        if len(shape) == len(t.shape) - 1:
            shape = (1,) + shape
        if len(shape) != len(t.shape):
            raise ValueError(
                f"input_shape {shape} does not match the rank of model "
                f"input {tuple(t.shape)}."
            )
        specs[id(t)] = keras.KerasTensor((1,) + shape[1:], dtype=t.dtype)
    for node in nodes:
        if node.is_input:
            continue
        # Symbolic re-run of the graph (as Functional._run_through_graph
        # does), without creating nodes on the user's layers.
        args, kwargs = node.arguments.fill_in(specs)
        outputs = node.operation.compute_output_spec(*args, **kwargs)
        for t, spec in zip(node.outputs, keras.tree.flatten(outputs)):
            specs[id(t)] = spec
    return {k: tuple(v.shape[1:]) for k, v in specs.items()}


def _propagate(op, in_shapes, out_shapes, in_act, override, elementwise):
    """Active size of the last axis of each output of one node."""
    full_out = [s[-1] for s in out_shapes]
    if override[1] is not None:
        return [override[1]] * len(out_shapes)
    if not in_shapes:
        return full_out
    a_in = override[0] if override[0] is not None else in_act[0]
    single = len(in_shapes) == 1 and len(out_shapes) == 1
    if isinstance(op, graph_lib._DEPTHWISE):
        return [a_in * op.depth_multiplier]
    if isinstance(op, graph_lib._CONV + (keras.layers.Dense,)):
        return full_out
    if single and isinstance(op, keras.layers.Flatten):
        return [a_in * math.prod(in_shapes[0][:-1])]
    if elementwise:
        tied = [a for a, s in zip(in_act, in_shapes) if s[-1] == full_out[0]]
        return [max(tied)] if tied else full_out
    if isinstance(op, keras.layers.Concatenate):
        rank = len(out_shapes[0]) + 1
        if op.axis in (-1, rank - 1):
            return [sum(in_act)]
        return [max(in_act)]
    if single and in_shapes[0][-1] == full_out[0]:
        return [a_in]
    return full_out


# === Per-layer rules ===


# The weights the conv, dense and BN rules count themselves.
_COUNTED = ("kernel", "bias", "gamma", "beta")


def _numel(variables):
    return sum(math.prod(v.shape) for v in variables)


class _Counter:
    def __init__(self, convention, count_relu, count_global_pool):
        self.convention = convention
        self.count_relu = count_relu
        self.count_global_pool = count_global_pool

    def _default(self, op, in_shape, out_shape):
        c_in, c_out = in_shape[-1], out_shape[-1]
        if isinstance(op, graph_lib._DEPTHWISE):
            k = math.prod(op.kernel_size)
            return self._conv(op, k * c_out, c_out, out_shape)
        if isinstance(op, graph_lib._CONV):
            k = math.prod(op.kernel_size)
            kernel = k * c_in * c_out // op.groups
            return self._conv(op, kernel, c_out, out_shape)
        if isinstance(op, keras.layers.Dense):
            return self._dense(op, c_in, c_out, in_shape)
        if isinstance(op, keras.layers.BatchNormalization):
            return self._bn(op, in_shape)
        return self._other(op, in_shape, out_shape)

    def layer(self, op, in_shape, out_shape):
        """(flops, params) of one call with active in/out shapes."""
        hook = getattr(op, "complexity", None)
        if callable(hook):
            result = hook(self.convention, (1,) + in_shape, (1,) + out_shape)
            if result is not None:
                return result
        if not isinstance(op, keras.layers.Layer):
            return 0, 0  # keras ops (x + y, ...) have no weights
        flops, params = self._default(op, in_shape, out_shape)
        ref = getattr(op, "reference_param_count", None)
        if self.convention == "pff" and callable(ref):
            params = ref()
        return flops, params

    def _conv(self, op, kernel, c_out, out_shape):
        positions = math.prod(out_shape[:-1])
        bias = c_out if op.use_bias else 0
        conv = self.convention
        if conv == "ekg":
            return kernel * positions, kernel
        if conv == "dhp":
            return kernel * positions, kernel + bias
        extra = self._extra_params(op)
        flops = kernel * positions * (2 if conv == "pff" else 1)
        return flops, kernel + bias + extra

    def _dense(self, op, c_in, c_out, in_shape):
        positions = math.prod(in_shape[:-1])
        macs = c_in * c_out * positions
        bias = c_out if op.use_bias else 0
        conv = self.convention
        flops = 2 * macs + bias * positions if conv == "pff" else macs
        if conv == "ekg":
            # EKG's counter always adds D_out for the (always present) bias.
            return flops, c_in * c_out + c_out
        extra = 0 if conv == "dhp" else self._extra_params(op)
        return flops, c_in * c_out + bias + extra

    def _bn(self, op, in_shape):
        numel = math.prod(in_shape)
        c = in_shape[-1]
        conv = self.convention
        if conv == "ekg":
            return 2 * numel, 4 * c
        if conv == "dhp":
            return 0, 0
        # gamma/beta whether or not the layer is frozen; never the stats.
        per_channel = int(op.scale) + int(op.center)
        extra = self._extra_params(op)
        flops = 2 * numel if conv == "pff" else 0
        return flops, per_channel * c + extra

    def _other(self, op, in_shape, out_shape):
        conv = self.convention
        if conv in ("ekg", "dhp"):
            return 0, 0
        params = _numel(op.trainable_weights)
        if conv != "pff":
            return 0, params
        flops = 0
        if isinstance(op, _POOLING):
            k = math.prod(op.pool_size)
            flops = k * math.prod(out_shape)
        elif isinstance(op, _GLOBAL_POOLING) and self.count_global_pool:
            flops = math.prod(in_shape)
        elif isinstance(op, graph_lib.ACTIVATIONS) and self.count_relu:
            flops = math.prod(out_shape)
        return flops, params

    def _extra_params(self, op):
        """Trainable params of a conv, dense or BN `op` beyond its kernel
        and bias or gamma and beta (a filter skeleton, ...)."""
        known = {id(getattr(op, k, None)) for k in _COUNTED}
        return _numel(v for v in op.trainable_weights if id(v) not in known)
