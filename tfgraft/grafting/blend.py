"""Pure graft math on lists of tensors (METHODS.md §1.2-§1.3, §1.6).

Nothing here knows about Keras models. A net is described by a flat list of
tensors (for example `[v.value() for v in net.weights]`, BN moving statistics
included), the same order in every net. The graft functions take the
**pre-graft** lists of all nets ("snapshots") and return new lists computed
from those snapshots only, so no net ever reads a peer's already grafted
weights and the result does not depend on the order in which nets are
processed (§1.6). They return tensors and assign nothing: call them inside the
trainer's `tf.function` and `assign` the results afterwards. Layer level
(§1.2): `graft_layer_level`; filter level (§1.3, the paper's intent):
`graft_filter_level`.
"""

import dataclasses

import tensorflow as tf

from tfgraft.grafting import criteria


def blend(own, peer, alpha):
    """`alpha * own + (1 - alpha) * peer`.

    Args:
        own: float tensor of the receiving net.
        peer: tensor of the peer net, same shape as `own`.
        alpha: own weight, broadcastable to `own`: a scalar for layer-level
            grafting, a per-channel tensor shaped for broadcasting for
            filter-level grafting. Cast to `own.dtype`.

    Returns:
        The blended tensor, `own.dtype`. `alpha = 0.5` on identical inputs
        returns them bit-exactly.
    """
    own = tf.convert_to_tensor(own)
    if not own.dtype.is_floating:
        raise ValueError(
            f"blend needs floating tensors. Received: own.dtype={own.dtype}"
        )
    peer = tf.convert_to_tensor(peer, dtype=own.dtype)
    alpha = tf.cast(alpha, own.dtype)
    return alpha * own + (1.0 - alpha) * peer


def ring_peers(num_nets):
    """Peer (donor) index of each net on the ring of §1.2 step 4.

    Net i receives from net i - 1 and net 0 from net N - 1, so
    `ring_peers(3) == [2, 0, 1]`. A single net is its own peer (grafting it
    changes nothing).
    """
    criteria.check_count("num_nets", num_nets)
    return [(i - 1) % num_nets for i in range(num_nets)]


def _check_peers(peers, num_nets):
    if peers is None:
        return ring_peers(num_nets)
    peers = [int(p) for p in peers]
    if len(peers) != num_nets or any(not 0 <= p < num_nets for p in peers):
        raise ValueError(
            f"peers must give one net index in [0, {num_nets}) per net. "
            f"Received: peers={peers}"
        )
    return peers


def _check_snapshots(snapshots):
    """Reads every snapshot into a tensor once; returns a list of lists."""
    snapshots = [[tf.convert_to_tensor(t) for t in net] for net in snapshots]
    if not snapshots:
        raise ValueError("snapshots must hold at least one net. Received: []")
    sizes = [len(net) for net in snapshots]
    if len(set(sizes)) != 1:
        raise ValueError(
            "Every net must have the same number of tensors. "
            f"Received: tensors per net={sizes}"
        )
    return snapshots


def ring_alphas(information, a=0.4, c=500.0, peers=None):
    """Layer alphas of every net against its peer.

    Args:
        information: list over nets of the per-conv information (entropy or
            L1), each a `[num_convs]` tensor or list of scalars in the same
            conv order.
        a: amplitude of `criteria.alpha`.
        c: steepness of `criteria.alpha`.
        peers: peer index per net; `ring_peers` by default.

    Returns:
        List over nets of float32 `[num_convs]` alphas,
        `alpha(info[i], info[peers[i]])`.
    """
    info = [tf.cast(tf.stack(list(x)), tf.float32) for x in information]
    peers = _check_peers(peers, len(info))
    return [criteria.alpha(info[i], info[p], a, c) for i, p in enumerate(peers)]


def expand_alphas(conv_alphas, sources):
    """Per-tensor alphas from per-conv alphas (the inheritance of §1.2 step 3).

    Args:
        conv_alphas: list over nets of `[num_convs]` alpha vectors
            (`ring_alphas`).
        sources: one conv index per tensor of a net: the conv whose alpha the
            tensor uses (a conv kernel itself, its BN, the FC after the last
            conv, a shortcut conv...). Built from the model graph.

    Returns:
        List over nets of float32 `[num_tensors]` vectors.
    """
    sources = tf.constant([int(s) for s in sources], tf.int32)
    return [tf.gather(tf.cast(x, tf.float32), sources) for x in conv_alphas]


def graft_layer_level(snapshots, alphas, peers=None):
    """Layer-level graft of all nets from their pre-graft snapshots.

    Args:
        snapshots: list over nets of lists of tensors (pre-graft values, the
            same tensor order in every net).
        alphas: list over nets of per-tensor own weights: a list of scalars
            (None: keep the own tensor) or a `[num_tensors]` vector per net
            (`expand_alphas`).
        peers: peer index per net; `ring_peers` by default.

    Returns:
        List over nets of lists of new tensors: tensor t of net i is
        `blend(snapshots[i][t], snapshots[peers[i]][t], alphas[i][t])`, or
        `snapshots[i][t]` itself where that alpha is None.
    """
    snapshots = _check_snapshots(snapshots)
    peers = _check_peers(peers, len(snapshots))
    if len(alphas) != len(snapshots):
        raise ValueError(
            "alphas must hold one entry per net. "
            f"Received: {len(alphas)} alpha lists for {len(snapshots)} nets"
        )
    grafted = []
    for i, p in enumerate(peers):
        own, peer, net_alphas = snapshots[i], snapshots[p], alphas[i]
        if len(net_alphas) != len(own):
            raise ValueError(
                f"Net {i} needs one alpha per tensor. "
                f"Received: {len(net_alphas)} alphas for {len(own)} tensors"
            )
        grafted.append(
            [
                own[t]
                if net_alphas[t] is None
                else blend(own[t], peer[t], net_alphas[t])
                for t in range(len(own))
            ]
        )
    return grafted


@dataclasses.dataclass(frozen=True)
class FilterGraftUnit:
    """Where one conv -> BN pair of a filter-level graft lives in a net.

    All entries are indices into a net's flat tensor list.

    Attributes:
        kernel: the conv kernel, `[kh, kw, in, out]` (or a depthwise kernel
            `[kh, kw, channels, 1]` with `out_axis=2`).
        bn: the BN's per-channel tensors, **gamma first**, e.g.
            `(gamma, beta, moving_mean, moving_variance)`. Gamma gives the
            channel weights `w`; every listed tensor is blended with them.
        bias: the conv bias, or None. Left untouched unless
            `graft_filter_level(..., blend_conv_bias=True)` (§1.3: "FC and
            conv biases untouched").
        prev: index in the units list of the unit whose BN feeds this conv's
            input channels, or None for the first conv of a chain. Its `w`
            blends this kernel's input slices first.
        out_axis: the kernel's output-channel axis: -1 (3) for Conv2D, 2 for
            depthwise kernels (whose input and output channel are both on
            axis 2). Input channels are always on axis 2 (the second-last).
    """

    kernel: int
    bn: tuple
    bias: int | None = None
    prev: int | None = None
    out_axis: int = -1

    def __post_init__(self):
        object.__setattr__(self, "bn", tuple(int(t) for t in self.bn))
        if not self.bn:
            raise ValueError(
                "FilterGraftUnit.bn needs at least the gamma index. "
                f"Received: bn={self.bn}"
            )
        if self.out_axis not in (-1, -2, 2, 3):
            raise ValueError(
                "FilterGraftUnit.out_axis must be -1/3 (conv) or 2 "
                f"(depthwise). Received: out_axis={self.out_axis}"
            )


def _along(w, axis, rank):
    """Reshapes a vector so it broadcasts along `axis` of a rank-`rank` x."""
    shape = [1] * rank
    shape[axis] = -1
    return tf.reshape(w, shape)


def graft_kernel(own, peer, w_out, w_in=None, out_axis=-1):
    """Filter-level blend of one conv kernel (METHODS.md §1.3).

    First every input slice j (`kernel[:, :, j, :]`) is blended with
    `w_in[j]`, then every output filter o (`kernel[..., o]`) of that result
    with `w_out[o]`, both times against the peer's **original** kernel. So
    element (o, j) gets own weight `w_out[o] * w_in[j]` and peer weight
    `1 - w_out[o] * w_in[j]`; with `w_in=None` it is `w_out[o]`.

    Args:
        own: kernel of the receiving net, rank 4 (`[kh, kw, in, out]`) or any
            rank >= 2 whose second-last axis is the input channel.
        peer: the peer's kernel, same shape.
        w_out: `[out]` own weights of the output channels (this conv's BN).
        w_in: `[in]` own weights of the input channels (the previous BN), or
            None.
        out_axis: -1, or 2 (second-last) for a depthwise kernel
            `[kh, kw, channels, 1]`, where channel c is both input and output
            c, so its own weight is `w_out[c] * w_in[c]`.

    Returns:
        The blended kernel.
    """
    own = tf.convert_to_tensor(own)
    rank = own.shape.rank
    if rank is None or rank < 2:
        raise ValueError(
            f"graft_kernel needs a kernel of rank >= 2. Received: "
            f"shape={own.shape}"
        )
    out = out_axis % rank
    if out not in (rank - 1, rank - 2):
        raise ValueError(
            "out_axis must be the last or second-last kernel axis. "
            f"Received: out_axis={out_axis} for shape={own.shape}"
        )
    for name, w, axis in (("w_out", w_out, out), ("w_in", w_in, rank - 2)):
        if w is None:
            continue
        size = tf.TensorShape(tf.convert_to_tensor(w).shape).num_elements()
        if None not in (size, own.shape[axis]) and size != own.shape[axis]:
            raise ValueError(
                f"{name} needs one weight per channel on axis {axis}. "
                f"Received: {size} weights for kernel shape {own.shape}"
            )
    blended = own
    if w_in is not None:
        blended = blend(own, peer, _along(w_in, rank - 2, rank))
    return blend(blended, peer, _along(w_out, out, rank))


def _check_units(units, num_tensors):
    used = {}
    for i, unit in enumerate(units):
        if not isinstance(unit, FilterGraftUnit):
            raise ValueError(
                "units must be FilterGraftUnit objects. "
                f"Received: units[{i}]={unit!r}"
            )
        if unit.prev is not None and not (
            0 <= unit.prev < len(units) and unit.prev != i
        ):
            raise ValueError(
                f"units[{i}].prev must index another unit. "
                f"Received: prev={unit.prev} with {len(units)} units"
            )
        indices = [unit.kernel, *unit.bn]
        if unit.bias is not None:
            indices.append(unit.bias)
        for t in indices:
            if not 0 <= t < num_tensors:
                raise ValueError(
                    f"units[{i}] refers to tensor {t}, but a net has "
                    f"{num_tensors} tensors. Received: {unit}"
                )
            if t in used:
                raise ValueError(
                    f"Tensor {t} appears in units[{used[t]}] and "
                    f"units[{i}]; each tensor can be grafted once."
                )
            used[t] = i


def graft_filter_level(
    snapshots, units, peers=None, blend_conv_bias=False, eps=1e-12
):
    """Filter-level graft of all nets from their pre-graft snapshots.

    For each unit (conv -> BN) and each net i with peer d, the channel
    weights are `w = criteria.bn_gamma_weights(gamma_i, gamma_d, eps)`. The
    BN tensors are blended per channel with `w`, the conv kernel by
    `graft_kernel(own, peer, w, w_prev)` where `w_prev` is the weights of the
    unit named by `prev` (all computed from the snapshots). Tensors that no
    unit names (the classifier, biases by default) keep the own value.

    Args:
        snapshots: list over nets of lists of tensors (pre-graft values, the
            same order in every net).
        units: sequence of `FilterGraftUnit`, e.g. one per conv of VGG16 in
            forward order with `prev` the previous unit's index.
        peers: peer index per net; `ring_peers` by default.
        blend_conv_bias: also blend each unit's conv bias with its `w`
            (off: the paper leaves conv biases untouched).
        eps: 0/0 guard of `criteria.bn_gamma_weights`.

    Returns:
        List over nets of lists of new tensors, same layout as `snapshots`.
    """
    snapshots = _check_snapshots(snapshots)
    peers = _check_peers(peers, len(snapshots))
    units = tuple(units)
    _check_units(units, len(snapshots[0]))
    grafted = []
    for i, p in enumerate(peers):
        own, peer = snapshots[i], snapshots[p]
        w = [
            criteria.bn_gamma_weights(own[u.bn[0]], peer[u.bn[0]], eps)
            for u in units
        ]
        new = list(own)
        for k, unit in enumerate(units):
            w_in = None if unit.prev is None else w[unit.prev]
            new[unit.kernel] = graft_kernel(
                own[unit.kernel], peer[unit.kernel], w[k], w_in, unit.out_axis
            )
            for t in unit.bn:
                new[t] = blend(own[t], peer[t], w[k])
            if unit.bias is not None and blend_conv_bias:
                new[unit.bias] = blend(own[unit.bias], peer[unit.bias], w[k])
        grafted.append(new)
    return grafted
