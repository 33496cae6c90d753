"""Grafter: wires the pure graft math of `blend.py` to N live Keras nets."""

import dataclasses

import keras
import tensorflow as tf

from tfgraft import graph as graph_lib
from tfgraft.grafting import blend
from tfgraft.grafting import criteria


# Which tensors a layer-level graft blends (`Grafter(scope=...)`).
ALL = "all"
CONV_BN = "conv_bn"
SCOPES = (ALL, CONV_BN)


@dataclasses.dataclass(frozen=True)
class GraftPlan:
    """Where every tensor of a net is and which alpha it uses.

    Attributes:
        layers: weighted layer names in topological order.
        tensor_layer: for each tensor, the layer owning it.
        sources: convs whose information gives an alpha, in order.
        tensor_source: for each tensor, the index into `sources` of the conv
            whose alpha it uses (the graph's alpha-inheritance map), or
            None for a tensor outside the plan's scope, which a
            layer-level graft leaves untouched.
        convs: conv/depthwise layers that are not projection shortcuts
            (entropy and invalid-filter statistics).
        units: filter-level units (conv -> BN chains).
        scope: the blend scope the plan was made for (`SCOPES`).

    Layer names are those of the net the plan was made for; a `Grafter`
    maps them to the other nets by graph position (`graph.match_layers`).
    """

    layers: tuple
    tensor_layer: tuple
    sources: tuple
    tensor_source: tuple
    convs: tuple
    units: tuple
    scope: str = ALL


def _in_scope(layer, weight, node, scope):
    if scope == ALL:
        return True
    # conv_bn, by layer type as the reference's VGG script (`isinstance`
    # Conv2d / BatchNorm2d): conv kernels and every BN tensor.
    if isinstance(layer, keras.layers.BatchNormalization):
        return True
    return (
        node is not None
        and node.kind != "dense"
        and weight is getattr(layer, "kernel", None)
    )


def make_plan(net, scope=ALL):
    """Builds the `GraftPlan` of a functional Keras model from its graph.

    Args:
        net: a functional or built `Sequential` Keras model.
        scope: which tensors a layer-level graft blends.
            `"all"` (the reference `grafting.py` of the ResNets and
            MobileNetV2, which blends the whole state dict): every weight
            of every weighted layer, BN moving statistics included.
            `"conv_bn"` (the reference VGG16 script's layer mode): conv and
            depthwise kernels and every BN tensor (gamma, beta, moving
            statistics); conv biases, the classifier and any other weight
            keep their own values. The alpha map is the same for both.
            Optimizer slots are never blended (they are not model weights).

    Returns:
        A `GraftPlan`.
    """
    if scope not in SCOPES:
        raise ValueError(
            f"Graft scope must be one of {', '.join(SCOPES)}. "
            f"Received: scope={scope!r}"
        )
    graph = graph_lib.analyze(net)
    alpha_of = graph.alpha_sources()
    tensor_layer, tensor_conv, layers = [], [], []
    first_index = {}
    for name in graph.order:
        if name not in alpha_of:
            continue
        layer = net.get_layer(name)
        node = graph.nodes.get(name)
        layers.append(name)
        first_index[name] = len(tensor_layer)
        for weight in layer.weights:
            tensor_layer.append(name)
            tensor_conv.append(
                alpha_of[name]
                if _in_scope(layer, weight, node, scope)
                else None
            )
    # The alpha-source convs, in first-use order.
    sources = list(dict.fromkeys(n for n in tensor_conv if n is not None))
    tensor_source = [
        None if name is None else sources.index(name) for name in tensor_conv
    ]
    # Projection shortcuts are left out of the filter statistics, as the
    # reference counts only tensors named `conv` (not `downsample`/
    # `shortcut`).
    convs = tuple(n.name for n in graph.convs() if not n.is_shortcut)
    units = _filter_units(net, graph, first_index)
    return GraftPlan(
        layers=tuple(layers),
        tensor_layer=tuple(tensor_layer),
        sources=tuple(sources),
        tensor_source=tuple(tensor_source),
        convs=convs,
        units=tuple(units),
        scope=scope,
    )


def _filter_units(net, graph, first_index):
    units = []
    unit_of_conv = {}
    for node in graph.convs():
        if node.bn is None:
            continue
        conv = net.get_layer(node.name)
        bn = net.get_layer(node.bn)
        if not (bn.scale and bn.center):
            continue
        k0 = first_index[node.name]
        b0 = first_index[node.bn]
        # Keras BN weight order: gamma, beta, moving_mean, moving_variance.
        bn_idx = tuple(range(b0, b0 + len(bn.weights)))
        bias = k0 + 1 if getattr(conv, "use_bias", False) else None
        prev = None
        if len(node.producers) == 1 and node.producers[0] in unit_of_conv:
            producer = graph.nodes[node.producers[0]]
            if producer.out_group == node.in_group:
                prev = unit_of_conv[node.producers[0]]
        unit_of_conv[node.name] = len(units)
        units.append(
            blend.FilterGraftUnit(
                kernel=k0,
                bn=bn_idx,
                bias=bias,
                prev=prev,
                out_axis=2 if node.kind == "depthwise" else -1,
            )
        )
    return units


class Grafter(tf.Module):
    """Computes every net's grafted weights from pre-graft snapshots.

    `graft_step()` is a `tf.function` meant for cross-replica context (never
    inside `strategy.run`): it reads each net's weights once, computes the
    information of every alpha-source conv, the ring alphas (net i receives
    from net i-1) and all new values from those snapshots, then assigns
    them; assignment to mirrored variables in cross-replica context updates
    every replica identically.

    The nets are paired layer by layer through their graphs, never by layer
    names: `nets` built by one function graft whether their layers carry
    explicit or auto-generated names (`conv2d`, `conv2d_1`, ...). Net 0's
    layer names name the plan (`plan`); the statistics methods use each
    net's own names.

    Args:
        nets: N >= 2 functional or built `Sequential` Keras models of one
            architecture (same layers, weight shapes and wiring; see
            `tfgraft.graph.match_layers`). Subclassed models have no graph
            and are refused.
        criterion: `entropy` or `l1` (layer level).
        level: `layer` (arctan alpha per conv) or `filter` (per-channel BN
            gamma weights, METHODS §1.3 intent).
        a: amplitude A of the alpha formula.
        c: steepness c of the alpha formula.
        scope: which tensors a layer-level graft blends (`make_plan`).
            Filter-level grafting always blends its conv -> BN units only
            (conv kernels and BN; biases and classifier kept).
    """

    def __init__(
        self,
        nets,
        *,
        criterion="entropy",
        level="layer",
        a=0.4,
        c=500.0,
        scope=ALL,
    ):
        super().__init__(name="grafter")
        nets = list(nets)
        if len(nets) < 2:
            raise ValueError(
                "Grafting needs at least 2 nets. "
                f"Received: len(nets)={len(nets)}"
            )
        if criterion not in ("entropy", "l1"):
            raise ValueError(
                "Grafter criterion must be 'entropy' or 'l1'. Received: "
                f"criterion={criterion}"
            )
        if level not in ("layer", "filter"):
            raise ValueError(
                "Grafter level must be 'layer' or 'filter'. Received: "
                f"level={level}"
            )
        criteria.alpha(0.0, 0.0, a, c)  # validates a and c
        self.nets = nets
        self.criterion = criterion
        self.level = level
        self.a = float(a)
        self.c = float(c)
        self.scope = scope
        # Pairs every net's layers with net 0's by graph position; raises
        # one GraphMismatchError naming the first layer that differs.
        self._layers = graph_lib.match_layers(self.nets)
        self._position = {
            layer.name: k for k, layer in enumerate(self._layers[0])
        }
        self.plan = make_plan(self.nets[0], scope)
        if not self.plan.sources:
            raise ValueError(
                f"scope={scope!r} selects no tensor of net 0 "
                f"('{self.nets[0].name}'): it has no conv or BN weights"
            )
        if level == "filter" and not self.plan.units:
            raise ValueError(
                "level='filter' needs conv -> BatchNormalization pairs; net "
                f"0 ('{self.nets[0].name}') has none"
            )
        self._variables = [
            self._net_variables(i) for i in range(len(self.nets))
        ]
        # No data-dependent control flow here: autograph is not needed (and
        # mis-converts bound methods called from comprehensions).
        self.graft_step = tf.function(self._graft_step, autograph=False)

    def layer(self, net_index, name):
        """The layer of net `net_index` at net 0's layer `name`'s position."""
        return self._layers[net_index][self._position[name]]

    def _net_variables(self, net_index):
        out = []
        for name in self.plan.layers:
            out.extend(self.layer(net_index, name).weights)
        return out

    def information(self, net_index):
        """Per-source-conv information (entropy or L1) of one net (a list)."""
        measure = {"entropy": criteria.entropy, "l1": criteria.l1}
        kernels = [self.layer(net_index, n).kernel for n in self.plan.sources]
        return [
            measure[self.criterion](tf.cast(k.value, tf.float32))
            for k in kernels
        ]

    def _graft_step(self):
        snapshots = [
            [tf.identity(v.value) for v in net_vars]
            for net_vars in self._variables
        ]
        if self.level == "layer":
            info = [self.information(i) for i in range(len(self.nets))]
            conv_alphas = blend.ring_alphas(info, self.a, self.c)
            # Lists of scalars (not gathered vectors) keep blend's Python
            # length checks valid inside the graph.
            alphas = [
                [None if k is None else a[k] for k in self.plan.tensor_source]
                for a in conv_alphas
            ]
            new = blend.graft_layer_level(snapshots, alphas)
            summary = tf.stack([tf.reduce_mean(x) for x in conv_alphas])
        else:
            new = blend.graft_filter_level(snapshots, self.plan.units)
            summary = tf.stack(
                [
                    tf.reduce_mean(
                        criteria.bn_gamma_weights(
                            snapshots[i][self.plan.units[0].bn[0]],
                            snapshots[p][self.plan.units[0].bn[0]],
                        )
                    )
                    for i, p in enumerate(blend.ring_peers(len(self.nets)))
                ]
            )
        for net_vars, values, own in zip(self._variables, new, snapshots):
            for v, value, snapshot in zip(net_vars, values, own):
                # A tensor the graft keeps (outside the scope, in no filter
                # unit) is its snapshot: not assigned at all.
                if value is not snapshot:
                    v.assign(tf.cast(value, v.dtype))
        return summary

    # === Statistics for reports and pictures ===

    def layer_entropies(self, net_index):
        """`{conv name: entropy of its kernel}` for every conv of a net.

        Keys are the net's own layer names, in `plan.convs` order.
        """
        layers = [self.layer(net_index, name) for name in self.plan.convs]
        return {
            layer.name: float(criteria.entropy(layer.kernel.value))
            for layer in layers
        }

    def invalid_filters(self, net_index, thresholds=(0.1, 0.01)):
        """Filters whose L1 norm is below each threshold (METHODS §1.2.7)."""
        counts = {str(t): 0 for t in thresholds}
        total = 0
        for name in self.plan.convs:
            layer = self.layer(net_index, name)
            kernel = layer.kernel.value
            axis = 2 if isinstance(layer, keras.layers.DepthwiseConv2D) else -1
            total += int(kernel.shape[axis])
            for t in thresholds:
                counts[str(t)] += int(
                    criteria.invalid_filter_count(kernel, t, axis)
                )
        return {"total_filters": total, "below": counts}
