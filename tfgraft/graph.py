"""Channel-dependency graph of a functional Keras model.

`analyze(model)` walks the layer graph of any functional (or built
`Sequential`) Keras model and answers the questions that all four methods
ask before they touch a channel:

* which channels must be pruned together (**channel groups**): every
  conv/dense output starts a group; BN, activations, pooling, padding and
  other channel-wise layers pass it on; an `Add` (residual stream) ties
  all its inputs into one group; a `DepthwiseConv2D` (depth multiplier 1)
  writes into its input's group; a `Flatten` keeps the group and records
  how many features each channel became;
* which conv/dense layers write the channels a layer reads (producers),
  which BN normalises each conv, and which convs are projection shortcuts;
* grafting's alpha-inheritance map (`ChannelGraph.alpha_sources`);
* which layer of one model is which layer of another model of the same
  architecture (`match_layers`: by graph position, so two models built by
  one function pair up even when Keras auto-named their layers
  `conv2d_2` in one and `conv2d_9` in the other).

Layers are identified by type and graph position, never by name, so user
models work as long as they are channels-last.

Rules for layers that do not map channels one to one (documented because
they decide what can be pruned):

* the model input (RGB) is group 0 and never prunable;
* `Concatenate` along the channel axis starts a new, non-prunable group
  (its channels come from several groups; prune those instead);
* an unknown single-input layer that keeps the channel count (last axis)
  is assumed to be channel-wise and passes the group on (e.g.
  `Standardize`, gates, `Reshape` to `(H*W, C)`); one that changes it
  (e.g. the option-A shortcut, which pads zero channels) starts a new,
  non-prunable group; unknown multi-input layers do the same;
* a depthwise conv with `depth_multiplier > 1` starts a new, non-prunable
  group (its outputs are tied to its input channels);
* an element-wise merge only ties inputs whose channel count equals the
  output's (a broadcast `(..., 1)` input is left alone); `Add`,
  `Subtract` and `Average` mark the group `residual`; a keras op on
  several same-shape tensors (`x + y` in a functional model) counts as an
  element-wise merge;
* a group fed by anything other than conv/dense outputs (model input,
  concatenation, unknown layer) or holding a model output (the logits) is
  `prunable=False`.

Producers pass through every layer, unknown ones included: they answer
"whose outputs reach this input", not "whose channels are aligned with it"
(use the groups for that).
"""

import collections
import dataclasses
import functools
import math

import keras

# Activation layers (EKG gates after them, the PFF counter counts them).
ACTIVATIONS = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.PReLU,
)
# Layers that apply an element-wise function and therefore keep "the output
# of conv X" intact for BN binding and shortcut detection.
_IDENTITY_LIKE = ACTIVATIONS + (
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
    keras.layers.ActivityRegularization,
    keras.layers.Identity,
)
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_CONV = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_SUMMING = (keras.layers.Add, keras.layers.Subtract, keras.layers.Average)
_ELEMENTWISE = _SUMMING + (
    keras.layers.Maximum,
    keras.layers.Minimum,
    keras.layers.Multiply,
)


class GraphError(ValueError):
    """The model cannot be analysed (nested model, channels-first, ...)."""


@dataclasses.dataclass(frozen=True)
class ConvNode:
    """A conv, depthwise conv or dense layer in the channel graph.

    Attributes:
        name: layer name.
        kind: `"conv"`, `"depthwise"` or `"dense"`.
        bn: name of the `BatchNormalization` applied to this layer's output
            through nothing but element-wise layers (activations, dropout),
            or `None`.
        in_group: channel group of the input channels.
        out_group: channel group of the output channels (depthwise: equal to
            `in_group`).
        producers: conv/dense layers whose outputs reach this layer's input
            without passing through another conv/dense, in topological
            order.
        is_shortcut: whether this conv ends the shorter branch of a
            two-input `Add` whose other branch also ends in a conv
            (projection shortcut).
        block_last_conv: for a shortcut conv, the conv ending the other
            (main) branch of that `Add`; otherwise `None`.
        in_spatial: features per input channel; 1 except for a dense layer
            after `Flatten` of an `H x W` map (`H * W`, channel fastest, as
            NHWC flattens).
    """

    name: str
    kind: str
    bn: str | None
    in_group: int
    out_group: int
    producers: tuple[str, ...]
    is_shortcut: bool = False
    block_last_conv: str | None = None
    in_spatial: int = 1


@dataclasses.dataclass(frozen=True)
class ChannelGroup:
    """Channels that must be pruned together.

    Attributes:
        id: group id; 0 is the (first) model input.
        size: number of channels.
        producers: conv/dense layers writing these channels, in topological
            order (depthwise convs included).
        consumers: conv/dense layers reading these channels.
        residual: whether an `Add`/`Subtract`/`Average` sums several
            layers' outputs into this group (a residual stream).
        prunable: `False` for model outputs and when some channels come
            from the model input, a concatenation or an unknown layer, so no
            mask on the producers alone can remove them.
    """

    id: int
    size: int | None
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    residual: bool
    prunable: bool


@dataclasses.dataclass(eq=False, repr=False)
class ChannelGraph:
    """Result of `analyze`: conv nodes, channel groups and layer order.

    Attributes:
        nodes: `{name: ConvNode}` for conv, depthwise and dense layers, in
            topological order (PyTorch state-dict order for the usual
            residual models: a block's main-branch convs, then its
            shortcut).
        groups: `{id: ChannelGroup}` by id.
        layer_groups: `{name: (in_group, out_group)}` for every layer with a
            single channel-carrying input and output, in topological order
            (e.g. a BN's channels are `layer_groups[bn][1]`); `None` where a
            side has no group (several inputs).
        order: every layer name (InputLayer excluded) in topological order.
        weighted: names of the layers that own weights, in `order`.
    """

    nodes: dict
    groups: dict
    layer_groups: dict
    order: list
    weighted: list

    def convs(self):
        """Conv and depthwise nodes in topological order."""
        return [n for n in self.nodes.values() if n.kind != "dense"]

    def dense(self):
        """Dense nodes in topological order."""
        return [n for n in self.nodes.values() if n.kind == "dense"]

    def alpha_sources(self):
        """Grafting's alpha-inheritance map (METHODS §1.2 step 3, §1.6).

        The reference recomputes alpha for every tensor named `conv` and
        reuses the last such alpha for the following tensors in state-dict
        order. Built from the graph instead of names:

        * every conv / depthwise conv uses its own alpha, except a
          projection-shortcut conv, which uses its block's last conv's
          alpha (torchvision `downsample`, MobileNetV2 `shortcut`);
        * a BN uses the alpha of the conv it normalises;
        * every dense layer uses the alpha of the last conv;
        * any other weighted layer uses that of the most recent conv
          before it (the first conv if none precedes it).

        In a model without convs the dense layers play the role of convs
        (each computes its own alpha).

        Returns:
            `{weighted layer name: name of the conv whose alpha it uses}`.
        """
        sources = {}
        convs = self.convs()
        if not convs:
            convs = self.dense()
        for node in convs:
            sources[node.name] = (
                node.block_last_conv if node.is_shortcut else node.name
            )
        if not convs:
            return sources
        bn_owner = {n.bn: n.name for n in self.nodes.values() if n.bn}
        last_conv = sources[convs[-1].name]
        recent = sources[convs[0].name]
        for name in self.order:
            if name in sources:
                recent = sources[name]
                continue
            if name not in self.weighted:
                continue
            node = self.nodes.get(name)
            if node is not None and node.kind == "dense":
                sources[name] = last_conv
            elif name in bn_owner:
                sources[name] = sources[bn_owner[name]]
            else:
                sources[name] = recent
        return {n: sources[n] for n in self.order if n in sources}

    def __repr__(self):
        return (
            f"ChannelGraph({len(self.nodes)} nodes, {len(self.groups)} groups)"
        )


# === Traversal shared with tfgraft.complexity ===


def functional_of(model):
    """Returns the functional graph behind `model` or raises `GraphError`."""
    if isinstance(model, keras.Sequential):
        # A built Sequential keeps an internal Functional (Keras 3).
        functional = getattr(model, "_functional", None)
        if functional is None:
            raise GraphError(
                f"Sequential model '{model.name}' is not built; call it on "
                "an input or give it an Input layer first."
            )
        return functional
    if not hasattr(model, "_nodes_by_depth"):
        raise GraphError(
            f"Model '{getattr(model, 'name', model)}' is not a functional "
            "Keras model: a subclassed model wires its layers in Python "
            "(`call`), so it has no layer graph to analyse. Build it as a "
            "functional model (`inputs = keras.Input(shape)`, apply the "
            "layers of its `call` to `inputs`, then "
            "`keras.Model(inputs, outputs)`) or as a `keras.Sequential`."
        )
    return model


def ordered_nodes(model):
    """Nodes of `model`'s graph in PyTorch-like topological order.

    A post-order depth-first walk from the outputs that, at every merge,
    visits the input with the most convs behind it first. A residual block
    therefore lists its main branch (conv1, bn1, conv2, bn2) before its
    shortcut, as PyTorch modules declare them.

    Args:
        model: functional or built Sequential Keras model.

    Returns:
        list of `keras` graph nodes (input nodes included).
    """
    functional = functional_of(model)
    by_depth = functional._nodes_by_depth
    # Keras' own order (decreasing depth) is topological; use it to compute
    # the conv depth of every node before the ordered walk.
    keras_order = [
        node
        for depth in sorted(by_depth, reverse=True)
        for node in by_depth[depth]
    ]
    in_graph = set(keras_order)
    conv_depth, depth = {}, {}
    for node in keras_order:
        if isinstance(node.operation, keras.Model):
            raise GraphError(
                f"Layer '{node.operation.name}' is a nested model; build "
                "the model flat (call the inner layers directly)."
            )
        parents = [p for p in node.parent_nodes if p in in_graph]
        cd = max((conv_depth[p] for p in parents), default=0)
        conv_depth[node] = cd + int(_is_conv_like(node.operation))
        depth[node] = 1 + max((depth[p] for p in parents), default=0)

    output_nodes = []
    for tensor in functional.outputs:
        op, index, _ = tensor._keras_history
        output_nodes.append(op._inbound_nodes[index])
    # Unused inputs are part of the graph too (Keras keeps them).
    roots = output_nodes + [n for n in keras_order if n.is_input]

    def sorted_parents(node):
        parents = [p for p in node.parent_nodes if p in in_graph]
        # Stable: equal parents keep their input order.
        return sorted(parents, key=lambda p: (-conv_depth[p], -depth[p]))

    order, done = [], set()
    for root in roots:
        if root in done:
            continue
        stack = [(root, iter(sorted_parents(root)))]
        on_stack = {root}
        while stack:
            node, parents = stack[-1]
            for parent in parents:
                if parent not in done and parent not in on_stack:
                    stack.append((parent, iter(sorted_parents(parent))))
                    on_stack.add(parent)
                    break
            else:
                stack.pop()
                on_stack.discard(node)
                done.add(node)
                order.append(node)
    return order


def _is_conv_like(op):
    return isinstance(op, _DEPTHWISE + _CONV + (keras.layers.Dense,))


def _is_elementwise(op, node):
    """Element-wise merge layers, and keras ops such as `x + y` whose
    inputs all have the output's shape."""
    if isinstance(op, _ELEMENTWISE):
        return True
    if isinstance(op, keras.layers.Layer) or len(node.input_tensors) < 2:
        return False
    shape = tuple(node.outputs[0].shape)
    return len(node.outputs) == 1 and all(
        tuple(t.shape) == shape for t in node.input_tensors
    )


def _is_summing(op):
    if isinstance(op, keras.layers.Layer):
        return isinstance(op, _SUMMING)
    # `x + y` / `x - y` on symbolic tensors record keras ops, not layers.
    return type(op).__name__ in ("Add", "Subtract")


def _last_dim(tensor):
    shape = tensor.shape
    return shape[-1] if len(shape) else None


def _check_channels_last(layer, node):
    data_format = getattr(layer, "data_format", None)
    if data_format == "channels_first":
        raise GraphError(
            f"Layer '{layer.name}' is channels_first; tfgraft analyses "
            "channels_last models only."
        )
    if isinstance(layer, keras.layers.BatchNormalization):
        rank = len(node.input_tensors[0].shape)
        if layer.axis not in (-1, rank - 1):
            raise GraphError(
                f"BatchNormalization '{layer.name}' normalises axis "
                f"{layer.axis}; tfgraft analyses channels_last models only."
            )


# === Analysis ===


class _Groups:
    """Union-find over channel groups with merged attributes."""

    def __init__(self):
        self.parent = []
        self.size = []
        self.prunable = []
        self.residual = []

    def new(self, size, prunable):
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.prunable.append(prunable)
        self.residual.append(False)
        return len(self.parent) - 1

    def find(self, g):
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a, b):
        a, b = self.find(a), self.find(b)
        if a == b:
            return a
        # Keep the older id as root so ids follow first appearance.
        a, b = min(a, b), max(a, b)
        self.parent[b] = a
        self.prunable[a] = self.prunable[a] and self.prunable[b]
        self.residual[a] = self.residual[a] or self.residual[b]
        if self.size[a] is None:
            self.size[a] = self.size[b]
        return a


@dataclasses.dataclass
class _TensorInfo:
    group: int | None
    producers: frozenset
    spatial: int = 1
    # Conv/dense whose output reaches this tensor through element-wise
    # layers and BN only (for BN binding and shortcut detection).
    direct: str | None = None
    conv_depth: int = 0
    # Every conv/dense upstream of this tensor.
    ancestors: frozenset = frozenset()


def analyze(model):
    """Builds the channel-dependency graph of a functional Keras model.

    Args:
        model: a functional Keras model (or a built `keras.Sequential`),
            channels-last, without nested models.

    Returns:
        A `ChannelGraph`.

    Raises:
        GraphError: for subclassed or nested models and channels-first
            layers.

    Example:

    >>> x = keras.Input((8, 8, 4))
    >>> y = keras.layers.Conv2D(8, 3, name="c1")(x)
    >>> y = keras.layers.BatchNormalization(name="b1")(y)
    >>> y = keras.layers.Dense(2, name="fc")(
    ...     keras.layers.GlobalAveragePooling2D()(y))
    >>> graph = analyze(keras.Model(x, y))
    >>> graph.nodes["c1"].bn, graph.alpha_sources()["fc"]
    ('b1', 'c1')
    """
    nodes = ordered_nodes(model)
    groups = _Groups()
    info = {}  # id(KerasTensor) -> _TensorInfo
    records = collections.OrderedDict()  # conv name -> dict of fields
    layer_groups = collections.OrderedDict()
    order, weighted = [], []
    seen_ops = set()
    # Model inputs first, so that the (first) input is group 0.
    for t in functional_of(model).inputs:
        info[id(t)] = _TensorInfo(
            groups.new(_last_dim(t), prunable=False), frozenset()
        )

    for node in nodes:
        op = node.operation
        ins = [info[id(t)] for t in node.input_tensors if id(t) in info]
        outs = node.outputs
        if node.is_input:
            for t in outs:
                if id(t) not in info:
                    info[id(t)] = _TensorInfo(
                        groups.new(_last_dim(t), prunable=False), frozenset()
                    )
            continue
        if id(op) not in seen_ops:
            seen_ops.add(id(op))
            order.append(op.name)
            if getattr(op, "weights", None):
                weighted.append(op.name)
        if isinstance(op, keras.layers.Layer):
            _check_channels_last(op, node)
        single = len(ins) == 1 and len(outs) == 1
        x = ins[0] if ins else None
        # What a merge of the inputs carries (the group is set below).
        joined = _TensorInfo(
            None,
            frozenset().union(*(i.producers for i in ins)),
            conv_depth=max((i.conv_depth for i in ins), default=0),
            ancestors=frozenset().union(*(i.ancestors for i in ins)),
        )

        if single and _is_conv_like(op):
            kind = (
                "depthwise"
                if isinstance(op, _DEPTHWISE)
                else "dense"
                if isinstance(op, keras.layers.Dense)
                else "conv"
            )
            rec = records.get(op.name)
            if kind == "depthwise" and op.depth_multiplier == 1:
                out_group = x.group
            elif rec is not None:
                out_group = rec["out_group"]  # shared layer: same channels
            else:
                out_group = groups.new(
                    _last_dim(outs[0]), prunable=kind != "depthwise"
                )
            if rec is None:
                rec = records[op.name] = dict(
                    name=op.name,
                    kind=kind,
                    bn=None,
                    in_group=x.group,
                    out_group=out_group,
                    producers=set(),
                    in_spatial=x.spatial if kind == "dense" else 1,
                )
            else:
                rec["in_group"] = groups.union(rec["in_group"], x.group)
                rec["out_group"] = groups.union(rec["out_group"], out_group)
            rec["producers"] |= x.producers
            info[id(outs[0])] = _TensorInfo(
                out_group,
                frozenset([op.name]),
                direct=op.name,
                conv_depth=joined.conv_depth + 1,
                ancestors=joined.ancestors | {op.name},
            )
            layer_groups.setdefault(op.name, (x.group, out_group))
            continue

        bn = isinstance(op, keras.layers.BatchNormalization)
        if single and (bn or isinstance(op, _IDENTITY_LIKE)):
            owner = records.get(x.direct) if bn and x.direct else None
            if owner is not None and owner["bn"] is None:
                owner["bn"] = op.name
            info[id(outs[0])] = dataclasses.replace(x)
            layer_groups.setdefault(op.name, (x.group, x.group))
            continue

        if single and isinstance(op, keras.layers.Flatten):
            dims = node.input_tensors[0].shape[1:-1]
            spatial = math.prod(1 if d is None else d for d in dims)
            info[id(outs[0])] = dataclasses.replace(
                x, spatial=x.spatial * spatial, direct=None
            )
            layer_groups.setdefault(op.name, (x.group, x.group))
            continue

        if _is_elementwise(op, node) and ins:
            summing = _is_summing(op)
            out_dim = _last_dim(outs[0])
            tied = [
                i.group
                for i, t in zip(ins, node.input_tensors)
                if _last_dim(t) == out_dim
            ]
            if tied:
                group = functools.reduce(groups.union, tied)
                if summing and len(tied) > 1:
                    groups.residual[groups.find(group)] = True
            else:
                group = groups.new(out_dim, prunable=False)
            if summing and len(ins) == 2:
                _mark_shortcut(records, ins)
            info[id(outs[0])] = dataclasses.replace(
                joined, group=group, spatial=max(i.spatial for i in ins)
            )
            continue

        if isinstance(op, keras.layers.Concatenate) and ins:
            rank = len(outs[0].shape)
            along_channels = op.axis in (-1, rank - 1)
            dims = {_last_dim(t) for t in node.input_tensors}
            if not along_channels and len(dims) == 1:
                group = functools.reduce(groups.union, [i.group for i in ins])
            else:
                group = groups.new(_last_dim(outs[0]), prunable=False)
            info[id(outs[0])] = dataclasses.replace(joined, group=group)
            continue

        # Unknown layer or keras op.
        if single and _last_dim(node.input_tensors[0]) == _last_dim(outs[0]):
            info[id(outs[0])] = dataclasses.replace(x, direct=None)
            layer_groups.setdefault(op.name, (x.group, x.group))
            continue
        for t in outs:
            info[id(t)] = dataclasses.replace(
                joined, group=groups.new(_last_dim(t), prunable=False)
            )
        if single:
            layer_groups.setdefault(op.name, (x.group, info[id(outs[0])].group))

    # The model's outputs (logits) are its interface: never prunable.
    for t in functional_of(model).outputs:
        if id(t) in info:
            groups.prunable[groups.find(info[id(t)].group)] = False
    return _finish(groups, records, layer_groups, order, weighted)


def _mark_shortcut(records, ins):
    a, b = ins
    if a.direct is None or b.direct is None or a.conv_depth == b.conv_depth:
        return
    short, main = (a, b) if a.conv_depth < b.conv_depth else (b, a)
    if short.direct in main.ancestors:
        return  # identity shortcut from a conv that also feeds the block
    rec = records[short.direct]
    if rec["kind"] == "dense" or rec.get("is_shortcut"):
        return
    rec["is_shortcut"] = True
    rec["block_last_conv"] = main.direct


def _finish(groups, records, layer_groups, order, weighted):
    position = {name: i for i, name in enumerate(order)}
    used = set()
    for rec in records.values():
        used.add(groups.find(rec["in_group"]))
        used.add(groups.find(rec["out_group"]))
    for pair in layer_groups.values():
        used.update(groups.find(g) for g in pair if g is not None)
    # Renumber roots by first appearance; the first input stays group 0.
    if groups.parent:
        used.add(groups.find(0))
    roots = sorted(used)
    new_id = {root: i for i, root in enumerate(roots)}

    def gid(g):
        return None if g is None else new_id[groups.find(g)]

    nodes = {}
    for name in sorted(records, key=position.__getitem__):
        rec = records[name]
        nodes[name] = ConvNode(
            name=name,
            kind=rec["kind"],
            bn=rec["bn"],
            in_group=gid(rec["in_group"]),
            out_group=gid(rec["out_group"]),
            producers=tuple(sorted(rec["producers"], key=position.get)),
            is_shortcut=rec.get("is_shortcut", False),
            block_last_conv=rec.get("block_last_conv"),
            in_spatial=rec["in_spatial"],
        )
    result = {}
    for root in roots:
        i = new_id[root]
        result[i] = ChannelGroup(
            id=i,
            size=groups.size[root],
            producers=tuple(n.name for n in nodes.values() if n.out_group == i),
            consumers=tuple(n.name for n in nodes.values() if n.in_group == i),
            residual=groups.residual[root],
            prunable=groups.prunable[root],
        )
    lg = collections.OrderedDict(
        (name, (gid(a), gid(b)))
        for name, (a, b) in sorted(
            layer_groups.items(), key=lambda kv: position[kv[0]]
        )
    )
    return ChannelGraph(nodes, result, lg, order, weighted)


# === Matching layers across models ===


class GraphMismatchError(GraphError):
    """Models that should share one architecture do not."""


def describe_layer(op):
    """A short architecture description of a layer, e.g. `Conv2D 3x3x16->32`.

    Convs and dense layers show their kernel (`kh x kw x in -> out`,
    `in -> out`; a depthwise kernel `kh x kw x channels x multiplier`),
    other weighted layers their weight shapes (`BatchNormalization 16` when
    every weight has one shape), weightless layers and keras ops their class
    name only.
    """
    name = type(op).__name__
    kernel = getattr(op, "kernel", None)
    shape = getattr(kernel, "shape", None)
    dims = [str(d) for d in shape] if shape is not None else []
    if len(dims) >= 2:
        if isinstance(op, _DEPTHWISE):
            return f"{name} {'x'.join(dims)}"
        return f"{name} {'x'.join(dims[:-1])}->{dims[-1]}"
    shapes = [
        "x".join(str(d) for d in w.shape) or "scalar"
        for w in getattr(op, "weights", None) or ()
    ]
    if not shapes:
        return name
    if len(set(shapes)) == 1:
        return f"{name} {shapes[0]}"
    return f"{name} {', '.join(shapes)}"


def _layer_signatures(model):
    """Layers of `model` in canonical order with what pairs them.

    Returns `(layers, signatures, outputs)`: the operations of the graph
    (InputLayer excluded) in `ordered_nodes` order, first call first; per
    layer a dict of its class, weight shapes, and per call its input and
    output shapes and where its inputs come from (`(layer position,
    output index)`, or `("input", j)` for model input j); and the same
    sources for the model's outputs. Nothing refers to a layer name.
    """
    functional = functional_of(model)
    nodes = ordered_nodes(functional)
    inputs = {
        id(t._keras_history[0]): j for j, t in enumerate(functional.inputs)
    }
    layers, position = [], {}
    for node in nodes:
        op = node.operation
        if not node.is_input and id(op) not in position:
            position[id(op)] = len(layers)
            layers.append(op)

    def source(tensor):
        op, _, index = tensor._keras_history
        if id(op) in inputs:
            return ("input", inputs[id(op)])
        return (position.get(id(op)), index)

    calls = collections.defaultdict(list)
    for node in nodes:
        if node.is_input:
            continue
        calls[id(node.operation)].append(
            dict(
                inputs=[source(t) for t in node.input_tensors],
                input_shapes=[tuple(t.shape) for t in node.input_tensors],
                output_shapes=[tuple(t.shape) for t in node.outputs],
            )
        )
    signatures = [
        dict(
            cls=type(op),
            description=describe_layer(op),
            weights=[tuple(w.shape) for w in getattr(op, "weights", ())],
            calls=calls[id(op)],
        )
        for op in layers
    ]
    outputs = [source(t) for t in functional.outputs]
    return layers, signatures, outputs


def _difference(a, b):
    """Why signature `a` differs from `b`, or None if they match."""
    if a["cls"] is not b["cls"]:
        return f"class {a['cls'].__name__} vs {b['cls'].__name__}"
    if a["weights"] != b["weights"]:
        return f"weight shapes {a['weights']} vs {b['weights']}"
    if len(a["calls"]) != len(b["calls"]):
        return f"called {len(a['calls'])} times vs {len(b['calls'])}"
    for ca, cb in zip(a["calls"], b["calls"]):
        for key, what in (
            ("inputs", "inputs from (layer, output)"),
            ("input_shapes", "input shapes"),
            ("output_shapes", "output shapes"),
        ):
            if ca[key] != cb[key]:
                return f"{what} {ca[key]} vs {cb[key]}"
    return None


def match_layers(models, label="net"):
    """Pairs the layers of models with one architecture by graph position.

    Two models built by the same function (functional or `Sequential`,
    with auto-generated or explicit layer names) list their layers in the
    same canonical topological order (`ordered_nodes`); position k of every
    model is then the same layer. Each position is checked: same class,
    same weight shapes, same input/output shapes and the same wiring (which
    positions feed it), and the models' outputs come from the same
    positions. Names are never compared.

    Args:
        models: functional or built `Sequential` Keras models.
        label: what the error message calls a model (`"net"`: "net 1 layer
            7 ...").

    Returns:
        A list over models of tuples of layers (keras operations, including
        weightless layers and keras ops; InputLayers excluded), one layer
        per position.

    Raises:
        GraphMismatchError: naming the first position where a model differs
            from model 0, e.g. `net 1 layer 7 ('conv2d_9', Conv2D
            3x3x16->32) does not match net 0 layer 7 ('conv2d_2', Conv2D
            3x3x16->16)`.
        GraphError: a model is not functional (see `functional_of`) or is
            nested.

    Example:

    >>> def make():
    ...     return keras.Sequential(
    ...         [keras.Input((4,)), keras.layers.Dense(2)])
    >>> a, b = match_layers([make(), make()])
    >>> a[0] is not b[0], a[0].name != b[0].name
    (True, True)
    """
    models = list(models)
    if not models:
        return []
    analysed = [_layer_signatures(m) for m in models]
    ref_layers, ref_sigs, ref_outputs = analysed[0]

    def said(i, k, layers):
        return f"{label} {i} layer {k} ('{layers[k].name}', " + (
            f"{describe_layer(layers[k])})"
        )

    for i, (layers, sigs, outputs) in enumerate(analysed[1:], start=1):
        for k in range(min(len(layers), len(ref_layers))):
            why = _difference(sigs[k], ref_sigs[k])
            if why is None:
                continue
            message = (
                f"{said(i, k, layers)} does not match "
                f"{said(0, k, ref_layers)}"
            )
            if sigs[k]["description"] == ref_sigs[k]["description"]:
                message += f": {why}"
            raise GraphMismatchError(message)
        if len(layers) != len(ref_layers):
            k = min(len(layers), len(ref_layers))
            if len(layers) > len(ref_layers):
                longer, j = layers, i
            else:
                longer, j = ref_layers, 0
            raise GraphMismatchError(
                f"{label} {i} has {len(layers)} layers and {label} 0 has "
                f"{len(ref_layers)}: {said(j, k, longer)} has no counterpart"
            )
        if outputs != ref_outputs:
            raise GraphMismatchError(
                f"{label} {i}'s outputs come from (layer, output) {outputs}, "
                f"{label} 0's from {ref_outputs}"
            )
    return [tuple(layers) for layers, _, _ in analysed]
