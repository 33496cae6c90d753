"""The gated supernet: a zoo network with one `ChannelGate` per channel group.

`GatedNetwork(model)` rewrites a functional Keras model (normally a zoo
network under the `ekg` preset) into a copy whose layers EKG can mask:

* every `Conv2D` becomes a `GatedConv2D` and every `Dense` a `GatedDense`
  (masked, norm-rescaled kernels), every `BatchNormalization` a
  `FrozenStatsBatchNormalization` (no moving-statistics updates);
* every prunable channel group of `tfgraft.graph.analyze(model)` gets one
  `ChannelGate`, called after each activation whose output carries that
  group (moved after a following pooling layer, as the reference gates
  after the stem's max-pool). For a ResNet this is the reference
  placement (METHODS §3.2): one gate for each residual stream, shared by
  the stem (or projection) and every block output of the stage, and one
  for each block's inner conv.

The copy owns its weights (copied from `model`); `model` is not changed.
Gates' orders and rates are the search state; `sync()` copies the gate
masks into the masked layers after any change.
"""

import collections
import dataclasses

import keras
import numpy as np

from tfgraft import graph as graph_lib
from tfgraft import surgery
from tfgraft.ekg import errors
from tfgraft.layers import gate as gate_lib


class GatingError(errors.EKGError):
    """The model has layers EKG cannot gate; the message names one."""


@dataclasses.dataclass(frozen=True)
class GateInfo:
    """What one gate controls.

    Attributes:
        name: gate layer name: `<slot>_gate` (slashes as underscores) or,
            without slots, `<first producer>_gate`.
        group: channel group id in `tfgraft.graph.analyze(model)`.
        channels: channel count `C`.
        num_calls: convs writing the group (the reference's `num_call`:
            1 + blocks for a stream gate, 1 for an inner conv's gate); the
            search's coarse step is `max(1/C, step/num_calls)`.
        producers: conv layers writing the group.
        consumers: conv/dense layers reading the group.
        slot: the channel-config slot of the producers (None when the
            model's slots are unknown).
    """

    name: str
    group: int
    channels: int
    num_calls: int
    producers: tuple
    consumers: tuple
    slot: str | None = None


_POOLS = (
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
)
_UNSUPPORTED = (
    keras.layers.Conv1D,
    keras.layers.Conv3D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    keras.layers.Conv2DTranspose,
    keras.layers.Concatenate,
)


def _check_supported(model, nodes):
    from tfgraft.models import common

    for node in nodes:
        op = node.operation
        if isinstance(op, common.OptionAShortcut):
            raise GatingError(
                f"layer '{op.name}' is an option-A shortcut; EKG prunes "
                "residual streams and needs projection shortcuts "
                "({shortcut}, the ekg preset's default)",
                shortcut="projection",
            )
        if isinstance(op, _UNSUPPORTED) or (
            isinstance(op, keras.layers.Conv2D) and op.groups != 1
        ):
            raise GatingError(
                f"layer '{op.name}' ({type(op).__name__}) is not supported "
                "by EKG gating; models must be built from Conv2D, "
                "BatchNormalization, Dense and channel-wise layers"
            )


def _masked_layer(layer, config):
    """The masked counterpart of a conv, dense or BN layer (else None)."""
    if isinstance(layer, keras.layers.Conv2D):
        return gate_lib.GatedConv2D.from_config(config)
    if isinstance(layer, keras.layers.Dense):
        return gate_lib.GatedDense.from_config(config)
    if isinstance(layer, keras.layers.BatchNormalization):
        return gate_lib.FrozenStatsBatchNormalization.from_config(config)
    return None


class GatedNetwork:
    """A masked copy of a functional model with one gate per channel group.

    Args:
        model: functional Keras model (channels last), e.g.
            `tfgraft.models.build_model(name, preset="ekg")`, already built
            (its weights are copied).
        slots: optional `{conv/BN layer name: width slot}`
            (`tfgraft.models.layer_slots(name, ...)`) to name each gate's
            channel-config slot.

    Attributes:
        model: the gated `keras.Model` (same inputs and outputs).
        source: the model it was built from.
        graph: `tfgraft.graph.analyze(source)`.
        gates: list of `ChannelGate` layers, in topological order.
        info: list of `GateInfo`, aligned with `gates`.
        group_gate: `{channel group id: gate index}`.
    """

    def __init__(self, model, *, slots=None):
        self.source = model
        self.graph = graph_lib.analyze(model)
        nodes = graph_lib.ordered_nodes(model)
        _check_supported(model, nodes)
        sites = self._gate_sites(nodes)
        self._make_gates(sites, slots)
        self._rewrite(model, nodes, sites)
        self._copy_weights(model)
        self.sync()

    # === Construction ===

    def _gate_sites(self, nodes):
        """`{id(node): group}` of the nodes whose output is gated."""
        consumers = collections.defaultdict(list)
        for node in nodes:
            for t in node.input_tensors:
                consumers[id(t)].append(node)
        groups = self.graph.groups
        sites = {}
        for node in nodes:
            op = node.operation
            if not isinstance(op, graph_lib.ACTIVATIONS):
                continue
            pair = self.graph.layer_groups.get(op.name)
            if pair is None or pair[1] is None:
                continue
            group = groups[pair[1]]
            if not group.prunable or not group.producers:
                continue
            if any(self.graph.nodes[p].kind != "conv" for p in group.producers):
                continue  # hidden dense layers keep their width
            site = node
            # Gate after a pooling layer that alone reads the activation.
            while True:
                users = consumers[id(site.outputs[0])]
                if len(users) == 1 and isinstance(users[0].operation, _POOLS):
                    site = users[0]
                else:
                    break
            sites[id(site)] = group.id
        return sites

    def _make_gates(self, sites, slots):
        gated_groups = list(dict.fromkeys(sites.values()))
        # Topological order of the groups' first producer.
        position = {n: i for i, n in enumerate(self.graph.order)}
        gated_groups.sort(
            key=lambda g: position[self.graph.groups[g].producers[0]]
        )
        self.gates, self.info, self.group_gate = [], [], {}
        for g in gated_groups:
            group = self.graph.groups[g]
            slot = None
            if slots is not None:
                names = {slots.get(p) for p in group.producers}
                if len(names) == 1:
                    slot = names.pop()
            base = slot.replace("/", "_") if slot else group.producers[0]
            name = f"{base}_gate"
            self.group_gate[g] = len(self.gates)
            self.gates.append(gate_lib.ChannelGate(name=name))
            self.info.append(
                GateInfo(
                    name=name,
                    group=g,
                    channels=int(group.size),
                    num_calls=len(group.producers),
                    producers=tuple(group.producers),
                    consumers=tuple(group.consumers),
                    slot=slot,
                )
            )

    def _rewrite(self, model, nodes, sites):
        def gate_outputs(node, outputs):
            if id(node) not in sites:
                return outputs
            gate = self.gates[self.group_gate[sites[id(node)]]]
            return [gate(outputs[0])] + list(outputs[1:])

        self.layers = {}
        self.model = surgery.rebuild(
            model,
            layer_factory=_masked_layer,
            output_hook=gate_outputs,
            layers=self.layers,
            name=f"{model.name}_gated",
        )

    def _copy_weights(self, model):
        for name, layer in self.layers.items():
            if not isinstance(layer, keras.layers.Layer):
                continue
            src = model.get_layer(name)
            ours = _own(layer)
            theirs = _own(src)
            if len(theirs) > len(ours):
                raise GatingError(
                    f"layer '{name}' has weights the gated copy lacks"
                )
            for dst, w in zip(ours, theirs):
                dst.assign(w)

    # === State ===

    @property
    def num_gates(self):
        return len(self.gates)

    def gate_index(self, name):
        return {info.name: i for i, info in enumerate(self.info)}[name]

    def rates(self):
        """Host list of the gates' rates."""
        return [float(g.rate.numpy()) for g in self.gates]

    def orders(self):
        """Host list of the gates' float32 order arrays."""
        return [g.order.numpy().copy() for g in self.gates]

    def kept(self, rates=None):
        """Channels each gate keeps under `rates` (default: current)."""
        rates = self.rates() if rates is None else rates
        return [
            gate_lib.kept_channels(info.channels, r)
            for info, r in zip(self.info, rates)
        ]

    def masks(self):
        """Host list of the gates' 0/1 masks."""
        return [g.mask().numpy() for g in self.gates]

    def set_rate(self, index, rate, sync=True):
        self.gates[index].rate.assign(float(rate))
        if sync:
            self.sync(gates=[index])

    def set_state(self, orders=None, rates=None):
        """Sets orders and/or rates of every gate, then syncs the masks."""
        if orders is not None:
            for g, o in zip(self.gates, orders):
                g.order.assign(np.asarray(o, np.float32))
        if rates is not None:
            for g, r in zip(self.gates, rates):
                g.rate.assign(float(r))
        self.sync()

    def state(self):
        """`(orders, rates)` of every gate (host copies)."""
        return self.orders(), self.rates()

    def reset_scores(self):
        for g in self.gates:
            g.score.assign(np.zeros(g.channels, np.float32))

    def score_variables(self):
        """The gates' score variables as `tf.Variable`s (for tapes)."""
        return [g.score.value for g in self.gates]

    def sync(self, gates=None):
        """Copies gate masks into the masked layers that read/write them.

        Args:
            gates: gate indices whose masks changed (default: all).
        """
        wanted = set(range(self.num_gates) if gates is None else gates)
        masks = {i: self.gates[i].mask() for i in wanted}
        for name, node in self.graph.nodes.items():
            layer = self.layers[name]
            gi = self.group_gate.get(node.in_group)
            if gi in wanted:
                layer.in_mask.assign(masks[gi])
            if node.kind == "dense":
                continue
            go = self.group_gate.get(node.out_group)
            if go in wanted:
                layer.out_mask.assign(masks[go])

    # === Channel configs ===

    def channel_config(self, full_config, rates=None):
        """The pruned `ChannelConfig`: `full_config` with gated slots cut.

        The recorded topology (preset, shortcut) of `full_config` is kept.

        Args:
            full_config: the `ChannelConfig` `source` was built from.
            rates: gate rates (default: current).
        """
        missing = [i.name for i in self.info if i.slot is None]
        if missing:
            raise GatingError(
                f"gate '{missing[0]}' has no channel-config slot; build the "
                "GatedNetwork with slots=tfgraft.models.layer_slots(...)"
            )
        widths = dict(full_config.widths)
        widths.update({i.slot: k for i, k in zip(self.info, self.kept(rates))})
        return dataclasses.replace(full_config, widths=widths, source=None)


def _own(layer):
    return list(layer.trainable_variables) + list(layer.non_trainable_variables)
