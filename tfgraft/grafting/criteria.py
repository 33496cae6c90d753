"""Information criteria of Filter Grafting: entropy, L1 norm and alpha.

Pure TensorFlow functions, float32, free of Python branching on tensor
values, so they run eagerly, inside `tf.function` and under XLA alike
(METHODS.md §1.2). A "filter" is every element of a kernel that shares one
output index: the last axis of a Keras kernel `[kh, kw, in, out]`, or axis 2
of a depthwise kernel `[kh, kw, channels, 1]` (pass `axis=2`).
"""

import math
import numbers

import tensorflow as tf

NUM_BINS = 10
"""Histogram bins of the reference entropy (`n = 10`)."""


def check_count(name, value):
    """Raises the one-line `ValueError` unless `value` is an int >= 1."""
    if (
        not isinstance(value, numbers.Integral)
        or isinstance(value, bool)
        or value < 1
    ):
        raise ValueError(
            f"{name} must be an integer >= 1. Received: {name}={value}"
        )


def _as_rows(w):
    """All elements of `w` as one float32 row, `[1, size]`."""
    return tf.reshape(tf.cast(w, tf.float32), [1, -1])


def _filters_as_rows(kernel, axis):
    """One float32 row per filter of `kernel`: `[kernel.shape[axis], -1]`."""
    kernel = tf.cast(kernel, tf.float32)
    rank = kernel.shape.rank
    if rank is None:
        raise ValueError(
            "Per-filter criteria need a kernel of known rank. "
            f"Received: kernel.shape={kernel.shape}"
        )
    if not -rank <= axis < rank:
        raise ValueError(
            f"axis is out of range for a rank-{rank} kernel. "
            f"Received: axis={axis}"
        )
    axis %= rank
    perm = [axis] + [i for i in range(rank) if i != axis]
    # A static filter count keeps the result's shape static in graphs.
    filters = kernel.shape[axis]
    if filters is None:
        filters = tf.shape(kernel)[axis]
    return tf.reshape(tf.transpose(kernel, perm), [filters, -1])


def _round_to_float32(x):
    """`float32(x)` for finite float64 `x >= 0`, rounded on the bit pattern.

    Round-half-to-even of the 29 low mantissa bits float64 has beyond
    float32 (a carry correctly bumps the exponent), then an exact cast. Done
    with integer ops because the compiler may drop a float rounding: under
    XLA (CPU, TF 2.21) `lo + float32(float64(k) * float64(step))` came out
    rounded once, as by an fma, not twice as written. Exact for results in
    float32's normal range (and 0); float32 subnormals are not handled.
    """
    bits = tf.bitcast(x, tf.int64)
    lsb = tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, 29), 1)
    bits = tf.bitwise.bitwise_and(
        bits + ((1 << 28) - 1) + lsb, ~((1 << 29) - 1)
    )
    return tf.cast(tf.bitcast(bits, tf.float64), tf.float32)


def _bin_edges(rows, num_bins):
    """Edges `lo + k * step`, k = 0..num_bins, rounded as the reference does.

    The reference works in float32: `step = (max - min) / n` is the rounded
    quotient and each edge `min + k * step` rounds the product, then the sum.
    TF does not keep those roundings by itself: in graphs Grappler turns
    `x / 10.0` into `x * 0.1` (one ulp off for about 20% of inputs), and
    under XLA `lo + k * step` is rounded only once. So the quotient and the
    products are formed in float64 (the products exactly) and rounded to
    float32 with integer ops (`_round_to_float32`). Double rounding through
    float64 is harmless for `/` (53 >= 2 * 24 + 2 bits), and `d * fl64(1/n)`
    is still far closer to `d / n` than any float32 rounding boundary.

    (PyTorch on CUDA divides by a Python scalar as `x * fl32(1 / n)`, so the
    reference's GPU runs can differ from these edges by one float32 ulp of
    `step`; that moves only elements within a few ulps of an edge.)
    """
    lo = tf.reduce_min(rows, axis=1, keepdims=True)
    hi = tf.reduce_max(rows, axis=1, keepdims=True)
    step = _round_to_float32(tf.cast(hi - lo, tf.float64) / float(num_bins))
    k = tf.range(num_bins + 1, dtype=tf.float64)
    return lo + _round_to_float32(k * tf.cast(step, tf.float64))


def _row_histograms(rows, num_bins):
    """Counts of the half-open bins `[edge_k, edge_k+1)` of each row.

    Returns int32 `[rows, num_bins]`. An element's bin is the number of edges
    1..n that are <= it (edges never decrease and edge 0 is the row's
    minimum), which is exactly the reference's pair of comparisons
    `x >= edge_k and x < edge_k+1`; `floor((x - lo) / step)` can disagree with
    them at the edges. Elements >= edge_n (the maximum, usually) get index n
    and are dropped, as in the reference.
    """
    edges = _bin_edges(rows, num_bins)
    bins = tf.searchsorted(edges[:, 1:], rows, side="right")
    # Per-row counts with a static size: unlike tf.math.bincount (whose size
    # depends on the data) this also compiles under XLA, and it is about
    # twice as fast as a scatter-add (unsorted_segment_sum) on CPU.
    counts = tf.raw_ops.DenseBincount(
        input=bins,
        size=num_bins + 1,
        weights=tf.zeros([0], tf.int32),
        binary_output=False,
    )
    return counts[:, :num_bins]


def _row_entropies(rows, num_bins):
    counts = tf.cast(_row_histograms(rows, num_bins), tf.float64)
    size = tf.cast(tf.shape(rows)[1], tf.float64)
    # count / size rounded once to float32, as in the reference (float64
    # for the same reason as in _bin_edges).
    p = tf.cast(counts / size, tf.float32)
    # Empty bins contribute 0 (the reference skips p == 0); the inner where
    # keeps log(0) = -inf out of the product.
    plogp = tf.where(p > 0.0, p * tf.math.log(tf.where(p > 0.0, p, 1.0)), 0.0)
    # 0 - sum (not -sum) so a constant tensor gives +0.0, not -0.0.
    return 0.0 - tf.reduce_sum(plogp, axis=1)


def entropy(w, num_bins=NUM_BINS):
    """Histogram entropy of all elements of `w` (METHODS.md §1.2 step 1).

    With `lo = min(w)` and `step = (max(w) - lo) / num_bins`, bin k holds the
    elements with `lo + k * step <= x < lo + (k + 1) * step` (float32 edges
    as in the reference), `p_k = count_k / size` and
    `H = -sum_{p_k > 0} p_k * ln(p_k)`. The bins are half-open, so elements
    equal to the maximum are not counted and `sum(p) < 1`; a constant tensor
    has entropy 0.

    Args:
        w: tensor of any shape and float dtype; computed in float32.
        num_bins: number of bins, 10 in the paper.

    Returns:
        A float32 scalar.

    Example:

    >>> round(float(entropy(tf.range(10.0))), 4)  # 0.9 * ln(10)
    2.0723
    """
    check_count("num_bins", num_bins)
    return _row_entropies(_as_rows(w), num_bins)[0]


def filter_entropy(kernel, axis=-1, num_bins=NUM_BINS):
    """`entropy` of each filter of `kernel`.

    Args:
        kernel: conv kernel, e.g. `[kh, kw, in, out]`.
        axis: the filter (output channel) axis: -1 for Conv2D/Dense kernels,
            2 for a depthwise kernel `[kh, kw, channels, 1]`.
        num_bins: number of bins.

    Returns:
        A float32 vector with one entropy per filter, `[kernel.shape[axis]]`.
    """
    check_count("num_bins", num_bins)
    return _row_entropies(_filters_as_rows(kernel, axis), num_bins)


def l1(w):
    """L1 norm (sum of absolute values) of all elements of `w`, float32.

    The layer-level L1 criterion is the norm, not the mean, so it is the sum
    of `filter_l1` over the filters.
    """
    return tf.reduce_sum(tf.abs(tf.cast(w, tf.float32)))


def filter_l1(kernel, axis=-1):
    """L1 norm of each filter of `kernel` (METHODS.md §1.2 step 7).

    Args:
        kernel: conv kernel, e.g. `[kh, kw, in, out]`.
        axis: the filter axis (-1, or 2 for depthwise kernels).

    Returns:
        A float32 vector `[kernel.shape[axis]]`: for filter j the sum of
        `|kernel[..., j]|` over all other axes.
    """
    return tf.reduce_sum(tf.abs(_filters_as_rows(kernel, axis)), axis=1)


def invalid_filter_count(kernel, threshold, axis=-1):
    """Number of filters whose L1 norm is below `threshold`, int32 scalar.

    These are the paper's "invalid" filters (thresholds 0.1 and 0.01).
    """
    if isinstance(threshold, numbers.Real) and not threshold >= 0:
        raise ValueError(
            f"threshold must be >= 0. Received: threshold={threshold}"
        )
    small = filter_l1(kernel, axis) < tf.cast(threshold, tf.float32)
    return tf.reduce_sum(tf.cast(small, tf.int32))


def alpha(h_self, h_peer, a=0.4, c=500.0):
    """Grafting coefficient of the receiving net (METHODS.md §1.2 step 2).

    `alpha = round((a / pi) * arctan(c * (h_self - h_peer)) + 0.5, 2)`, so
    alpha lies in `[0.5 - a/2, 0.5 + a/2]` and `alpha(d) + alpha(-d) == 1`.
    Computed in float64 like the reference's Python floats; the rounding is
    `round(100 * x) / 100` with ties to even, which can differ from Python's
    decimal-exact `round(x, 2)` only when `100 * x` is within one float64
    rounding of a tie (never seen for the arctan map).

    Args:
        h_self: information (entropy or L1) of the receiving net's layer;
            scalar or tensor.
        h_peer: same for the peer (donor) net; broadcastable to `h_self`.
        a: amplitude `A` in `[0, 1]`.
        c: steepness, > 0.

    Returns:
        float32 tensor of the broadcast shape: the own weight `alpha`; the
        peer gets `1 - alpha`.
    """
    if isinstance(a, numbers.Real) and not 0.0 <= a <= 1.0:
        raise ValueError(f"a must be in [0, 1]. Received: a={a}")
    if isinstance(c, numbers.Real) and not c > 0.0:
        raise ValueError(f"c must be > 0. Received: c={c}")
    # Each entropy is cast to float64 before the difference, as the
    # reference turns them into Python floats first.
    h_self = tf.cast(h_self, tf.float64)
    h_peer = tf.cast(h_peer, tf.float64)
    a = tf.cast(a, tf.float64)
    c = tf.cast(c, tf.float64)
    value = a / math.pi * tf.math.atan(c * (h_self - h_peer)) + 0.5
    return tf.cast(tf.round(value * 100.0) / 100.0, tf.float32)


def bn_gamma_weights(gamma_self, gamma_peer, eps=1e-12):
    """Per-channel own weights of filter-level grafting (METHODS.md §1.3).

    `w_j = |gamma_self_j| / (|gamma_self_j| + |gamma_peer_j|)`; where the
    denominator is <= `eps` (0/0) the channel gets 0.5, so the rule stays
    symmetric: `w(self, peer) + w(peer, self) == 1`.

    Args:
        gamma_self: BN scale of the receiving net, `[channels]`.
        gamma_peer: BN scale of the peer net, same shape.
        eps: denominators at or below this count as zero.

    Returns:
        A float32 vector `[channels]` in `[0, 1]`.
    """
    if isinstance(eps, numbers.Real) and not eps >= 0:
        raise ValueError(f"eps must be >= 0. Received: eps={eps}")
    own = tf.abs(tf.cast(gamma_self, tf.float32))
    peer = tf.abs(tf.cast(gamma_peer, tf.float32))
    total = own + peer
    valid = total > tf.cast(eps, tf.float32)
    return tf.where(valid, own / tf.where(valid, total, 1.0), 0.5)
