"""StripeConv2D (Filter Skeleton) and CompactStripeConv2D (deploy form)."""

import itertools
import math
import time

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tfgraft.layers.own_variables import OwnConfigMixin
from tfgraft.layers.own_variables import OwnVariablesMixin
from tfgraft.stripe_formulations import FORMULATIONS

PADDINGS = ("symmetric", "same", "valid")


def _pads(size, kernel, stride, padding):
    """(before, after) zero padding of one spatial axis.

    `size` may be a Python int or a scalar tensor (unknown static size).
    "symmetric" is PyTorch's `padding=k // 2` on both sides; "same" is
    TensorFlow's (extra pixel at the end).
    """
    if padding == "valid":
        return 0, 0
    if padding == "symmetric":
        return kernel // 2, kernel // 2
    total = ((size + stride - 1) // stride - 1) * stride + kernel - size
    total = max(total, 0) if isinstance(size, int) else tf.maximum(total, 0)
    return total // 2, total - total // 2


def _out_size(size, kernel, stride, padding):
    if size is None:
        return None
    before, after = _pads(size, kernel, stride, padding)
    return (size + before + after - kernel) // stride + 1


def _as_rows_of(y, x):
    """`y` reshaped to `x`'s leading dimensions and its own last one."""
    return tf.reshape(y, tf.concat([tf.shape(x)[:-1], tf.shape(y)[-1:]], 0))


def unsupported(conv):
    """Why a `Conv2D`'s settings rule out a stripe conv, or None."""
    if conv.groups != 1:
        return f"groups={conv.groups}"
    if tuple(conv.dilation_rate) != (1, 1):
        return f"dilation_rate={tuple(conv.dilation_rate)}"
    if conv.data_format != "channels_last":
        return f"data_format={conv.data_format}"
    return None


class _StripeConv(OwnConfigMixin, OwnVariablesMixin, keras.layers.Conv2D):
    """What both stripe convs share: `padding` (with "symmetric"), checks."""

    _config_attributes = ("padding",)

    def __init__(
        self, filters, kernel_size, strides=1, padding="symmetric", **kwargs
    ):
        cls = type(self).__name__
        padding = str(padding).lower()
        if padding not in PADDINGS:
            raise ValueError(
                f"{cls} padding must be one of {PADDINGS}. "
                f"Received: padding={padding}"
            )
        super().__init__(
            filters,
            kernel_size,
            strides=strides,
            padding="valid" if padding == "symmetric" else padding,
            **kwargs,
        )
        self.padding = padding
        reason = unsupported(self)
        if reason is not None:
            raise ValueError(
                f"{cls} supports groups=1, dilation_rate=1 and "
                f"channels_last only. Received: {reason}"
            )

    def compute_output_shape(self, input_shape):
        sizes = [
            _out_size(size, k, s, self.padding)
            for size, k, s in zip(
                input_shape[1:3], self.kernel_size, self.strides
            )
        ]
        return (input_shape[0], *sizes, self.filters)

    def _saved_variables(self):
        return [self._kernel] + ([self.bias] if self.use_bias else [])


@keras.saving.register_keras_serializable(package="tfgraft")
class StripeConv2D(_StripeConv):
    """2D convolution whose kernel is shaped by a learnable Filter Skeleton.

    A `k x k` filter over `C` input channels is seen as `k * k` stripes
    (1x1 filters of length `C`). The Filter Skeleton (FS) holds one
    trainable scalar per (kernel position, filter), initialised to 1, and
    the layer convolves with `kernel * FS[:, :, None, :]`. Trained under an
    L1 penalty (see `tfgraft.stripe`), small skeleton entries mark stripes
    that can be removed; `to_compact(threshold)` then builds the deploy form
    `CompactStripeConv2D`, which computes only the kept stripes.

    The default `padding="symmetric"` pads `k // 2` zeros on every side, as
    PyTorch's `padding=k // 2` (TensorFlow's `"same"` pads only bottom/right
    at stride 2). `"same"` and `"valid"` are accepted too. The skeleton is
    float32 even under mixed precision so values near the threshold are not
    rounded; it is saved with the kernel in `.keras` files.

    Args:
        filters: number of output filters.
        kernel_size: int or `(kh, kw)`.
        strides: int or `(sh, sw)`.
        padding: `"symmetric"` (default), `"same"` or `"valid"`.
        skeleton_initializer: the skeleton's initializer (keyword; ones).
        **kwargs: other `keras.layers.Conv2D` arguments (`use_bias`,
            `kernel_initializer`, `activation`, ...). Grouped and dilated
            convolutions and `channels_first` are not supported.

    Call arguments:
        inputs: tensor `(batch, height, width, channels)`.

    Returns:
        The convolution of `inputs` with the skeleton-scaled kernel (plus
        bias and activation as in `Conv2D`).

    Example:

    >>> layer = StripeConv2D(8, 3, use_bias=False)
    >>> tuple(layer(keras.ops.ones((2, 8, 8, 4))).shape)
    (2, 8, 8, 8)
    >>> tuple(layer.filter_skeleton.shape)
    (3, 3, 8)

    Reference:
        - [Meng et al., "Pruning Filter in Filter", NeurIPS 2020](
          https://arxiv.org/abs/2009.14410)
    """

    _config_attributes = ("padding", "skeleton_initializer")

    def __init__(self, *args, skeleton_initializer="ones", **kwargs):
        super().__init__(*args, **kwargs)
        self.skeleton_initializer = keras.initializers.get(skeleton_initializer)

    def build(self, input_shape):
        super().build(input_shape)
        kh, kw = self.kernel_size
        self.filter_skeleton = self.add_weight(
            name="filter_skeleton",
            shape=(kh, kw, self.filters),
            initializer=self.skeleton_initializer,
            trainable=True,
            # float32 under mixed precision too: the threshold test
            # |FS| > 0.01 must not see bf16-rounded values.
            dtype="float32",
        )

    def convolution_op(self, inputs, kernel):
        skeleton = ops.cast(self.filter_skeleton, kernel.dtype)
        kernel = kernel * skeleton[:, :, None, :]
        padding = self.padding
        if padding == "symmetric":
            kh, kw = self.kernel_size
            inputs = ops.pad(
                inputs,
                [[0, 0], [kh // 2, kh // 2], [kw // 2, kw // 2], [0, 0]],
            )
            padding = "valid"
        return ops.conv(
            inputs,
            kernel,
            strides=list(self.strides),
            padding=padding,
            data_format=self.data_format,
        )

    # === Stripes ===

    def stripe_mask(self, threshold):
        """Boolean `(kh, kw, filters)` NumPy mask of `|FS| > threshold`."""
        check_threshold(self.name, threshold)
        return np.abs(np.asarray(self.filter_skeleton.numpy())) > threshold

    def folded_kernel(self):
        """`kernel * FS` as a NumPy `(kh, kw, in, filters)` array."""
        kernel = np.asarray(keras.ops.convert_to_numpy(self.kernel))
        skeleton = np.asarray(self.filter_skeleton.numpy())
        return kernel * skeleton[:, :, None, :]

    def to_compact(
        self,
        threshold,
        *,
        in_channels=None,
        filters=None,
        formulation="auto",
        jit_compile=False,
        calibrate_shape=None,
        name=None,
    ):
        """Builds the deploy form of this layer.

        Kernel and skeleton are folded (`W * FS`, real skeleton values) and
        only the stripes with `|FS| > threshold` are kept.

        Args:
            threshold: stripes with `|FS| <= threshold` are dropped.
            in_channels: optional indices of the input channels to keep
                (the previous layer's surviving filters); default all.
            filters: optional indices of the filters to keep; every dropped
                filter must have no surviving stripe. Default all.
            formulation: see `CompactStripeConv2D`; or `"calibrate"`: the
                fastest of `CALIBRATION_CANDIDATES` timed on this machine
                at `calibrate_shape` (see `calibrate_formulation`); the
                layer then stores the formulation it chose.
            jit_compile: compile the compact layer with XLA.
            calibrate_shape: full input shape `(batch, h, w, channels)`
                of the calibration (with `"calibrate"` only).
            name: layer name; default this layer's name.

        Returns:
            A built `CompactStripeConv2D` holding the folded stripes.

        Raises:
            ValueError: bad threshold, indices, or every stripe pruned.
        """
        if not self.built:
            raise ValueError(
                f"StripeConv2D '{self.name}' must be built before to_compact()."
            )
        mask = self.stripe_mask(threshold)
        kernel = self.folded_kernel()
        if in_channels is not None:
            kernel = kernel[:, :, np.asarray(in_channels, dtype=np.int64), :]
        if filters is not None:
            filters = np.asarray(filters, dtype=np.int64)
            dropped = np.setdiff1d(np.arange(self.filters), filters)
            if mask[:, :, dropped].any():
                raise ValueError(
                    f"StripeConv2D '{self.name}': filters "
                    f"{dropped[mask[:, :, dropped].any(axis=(0, 1))].tolist()}"
                    " still have stripes and cannot be dropped."
                )
            mask = mask[:, :, filters]
            kernel = kernel[:, :, :, filters]
        if not mask.any():
            raise ValueError(
                f"StripeConv2D '{self.name}' has every stripe pruned "
                f"(|FS| <= {threshold} everywhere); nothing to compact."
            )
        bias = None
        if self.use_bias:
            bias = np.asarray(keras.ops.convert_to_numpy(self.bias))
            if filters is not None:
                bias = bias[filters]
        kwargs = dict(
            bias=bias,
            strides=self.strides,
            padding=self.padding,
            jit_compile=jit_compile,
            activation=self.activation,
            name=name or self.name,
            dtype=self.dtype_policy,
        )
        if formulation == "calibrate":
            if calibrate_shape is None:
                raise ValueError(
                    f"StripeConv2D '{self.name}': formulation='calibrate' "
                    "needs calibrate_shape=(batch, height, width, channels)."
                )
            shape = tuple(calibrate_shape[:-1]) + (kernel.shape[2],)
            formulation, _ = calibrate_formulation(
                kernel, mask, shape, **kwargs
            )
        return CompactStripeConv2D.from_dense(
            kernel, mask, formulation=formulation, **kwargs
        )

    # === Complexity hooks (tfgraft.complexity) ===

    def complexity(self, convention, input_shape, output_shape):
        """`(flops, params)` of one call; see `tfgraft.complexity`.

        `"pff"` counts the skeleton as parameters (the reference does);
        `"macs"` counts weights only (kernel and bias).
        """
        if convention not in ("pff", "macs"):
            return None
        kh, kw = self.kernel_size
        c_in, c_out = input_shape[-1], output_shape[-1]
        kernel = kh * kw * c_in * c_out
        positions = math.prod(output_shape[1:-1])
        bias = c_out if self.use_bias else 0
        if convention == "macs":
            return kernel * positions, kernel + bias
        return 2 * kernel * positions, kernel + bias + kh * kw * c_out

    def reference_param_count(self):
        """Kernel, bias and skeleton sizes (the reference's `numel`)."""
        c_in = self.kernel.shape[2]
        return self.complexity("pff", (1, c_in), (1, self.filters))[1]

    # === Saving ===

    def _saved_variables(self):
        # Conv2D saves [kernel, bias] only; the skeleton must travel too.
        return super()._saved_variables() + [self.filter_skeleton]


# Formulations `"calibrate"` times: in plain TF, and under per-layer XLA.
CALIBRATION_CANDIDATES = ("dense", "shift_add_matmul", "shift_add_segment")
CALIBRATION_CANDIDATES_XLA = ("dense", "shift_add")


def calibrate_formulation(
    kernel,
    mask,
    input_shape,
    *,
    candidates=None,
    seconds=0.3,
    margin=0.05,
    seed=0,
    **kwargs,
):
    """Times the compact formulations of one layer; returns the fastest.

    Every candidate `CompactStripeConv2D` (followed by an inference BN and
    a ReLU, which oneDNN fuses into a dense convolution as in a real
    network) runs as a `tf.function` on random inputs of `input_shape`
    (below batch 8, `8 // batch` independent calls per function, so the
    function's dispatch cost does not hide the layer's); they are timed
    round-robin, one call each per round, for about `seconds` (at least 5
    rounds, at most 50), and each one's fastest call counts (the least
    disturbed by other load). A stripe formulation replaces `"dense"`
    only when it is more than `margin` faster, so near-ties keep the
    dense convolution, whose result does not depend on timing noise.

    Args:
        kernel: NumPy `(kh, kw, in, filters)` folded kernel.
        mask: boolean `(kh, kw, filters)` stripes to keep.
        input_shape: `(batch, height, width, in)` to time at.
        candidates: formulations to time; default
            `CALIBRATION_CANDIDATES` (`CALIBRATION_CANDIDATES_XLA` with
            `jit_compile=True`). `"dense"` must be one of them.
        seconds: timing budget of the round-robin.
        margin: relative speed a stripe formulation must gain on dense.
        seed: seed of the random input.
        **kwargs: `CompactStripeConv2D.from_dense` arguments (`bias`,
            `strides`, `padding`, `jit_compile`, ...).

    Returns:
        `(formulation, {formulation: seconds})`.
    """
    if candidates is None:
        candidates = (
            CALIBRATION_CANDIDATES_XLA
            if kwargs.get("jit_compile")
            else CALIBRATION_CANDIDATES
        )
    if "dense" not in candidates:
        raise ValueError(
            f"calibration candidates must include 'dense'. "
            f"Received: candidates={candidates}"
        )
    kwargs = {k: v for k, v in kwargs.items() if k not in ("name", "dtype")}
    kwargs["activation"] = None
    rng = np.random.default_rng(seed)
    repeats = max(1, 8 // int(input_shape[0]))
    x = tf.constant(
        rng.standard_normal((repeats, *input_shape)).astype(np.float32)
    )
    filters = kernel.shape[-1]
    scale = tf.constant(rng.uniform(0.5, 1.5, filters).astype(np.float32))
    offset = tf.constant(rng.normal(0, 0.1, filters).astype(np.float32))

    def epilogue(y):
        y = tf.compat.v1.nn.fused_batch_norm(
            y, scale, offset, offset, scale, is_training=False
        )[0]
        return tf.nn.relu(y)

    fns = {}
    for formulation in candidates:
        layer = CompactStripeConv2D.from_dense(
            kernel, mask, formulation=formulation, **kwargs
        )
        fns[formulation] = tf.function(
            lambda t, layer=layer: [
                epilogue(layer(t[r])) for r in range(repeats)
            ],
            autograph=False,
        )
    for fn in fns.values():  # trace, compile, first-call allocations
        fn(x)[-1].numpy()
    best = dict.fromkeys(fns, math.inf)
    deadline = time.perf_counter() + seconds
    rounds = 0
    while rounds < 50 and (rounds < 5 or time.perf_counter() < deadline):
        rounds += 1
        for key, fn in fns.items():
            start = time.perf_counter()
            fn(x)[-1].numpy()
            best[key] = min(best[key], time.perf_counter() - start)
    fastest = min(best, key=best.get)
    if best[fastest] > (1 - margin) * best["dense"]:
        fastest = "dense"
    return fastest, best


def check_threshold(name, threshold):
    """Raises a ValueError naming layer or model `name` unless
    `threshold >= 0` (NaN included)."""
    if not threshold >= 0:
        raise ValueError(
            f"Stripe threshold must be >= 0 (layer '{name}'). "
            f"Received: threshold={threshold}"
        )


@keras.saving.register_keras_serializable(package="tfgraft")
class CompactStripeConv2D(_StripeConv):
    """Deploy form of a stripe-pruned convolution: only kept stripes run.

    `stripes[p]` lists the filters that keep kernel position `p` (positions
    row-major, `p = i * kw + j`). With the shift-and-add formulations the
    layer stores one weight per kept stripe: `kernel` has shape
    `(1, 1, in_channels, P)` with `P` the number of kept stripes, ordered
    position-major and then by filter, so `kernel[0, 0, :, q]` is the
    folded `W[i, j, :, o] * FS[i, j, o]` of the `q`-th stripe (see
    `stripe_order()`); `"dense"`/`"im2col"` keep it zero-filled as
    `(kh, kw, in_channels, filters)` (`stores_dense_kernel`). The output has
    all `filters` channels; a filter without stripes outputs zero (plus
    bias).

    The result equals the masked dense convolution; `formulation` chooses
    how it is computed:

    * `"shift_add"` (the reference): one 1x1 convolution producing every
      kept stripe, then each position's stripe outputs are shifted (and
      subsampled at stride > 1) and added into their filters with one
      gather + sum. At stride > 1 the input is subsampled per position
      first, so the 1x1 work is done at the output resolution. Fastest
      under XLA.
    * `"shift_add_matmul"`: the same, but the add into filters is a matmul
      with the 0/1 stripe-to-filter matrix (fast in plain TensorFlow).
    * `"shift_add_segment"`: the same, but the add into filters is a
      segment sum over the channels-first stripe outputs (two transposes
      instead of the 0/1 matmul, whose cost grows with `filters`; faster
      on wide layers at low resolution, e.g. VGG16's 512-channel 4x4
      layers).
    * `"im2col"`: the patches of the positions that have any stripe, then
      one matmul with the zero-filled `(positions * C, filters)` kernel.
    * `"dense"`: a dense convolution with the zero-filled kernel (oneDNN);
      saves only removed filters/channels and whole dead positions.
    * `"auto"` (default): per layer, the stripe path (`"shift_add"` with
      `jit_compile`, else `"shift_add_matmul"`) when a cost model fitted
      on CPU timings says it beats the dense convolution, else `"dense"`.
      Wide layers at high stripe sparsity go the stripe path; narrow ones
      (ResNet-56's 16-64 channels) stay dense, where memory traffic, not
      multiply-adds, bounds the time.

    Args:
        filters: number of output channels.
        kernel_size: int or `(kh, kw)` of the original convolution.
        stripes: list of `kh * kw` lists of kept filter indices.
        strides: int or `(sh, sw)`.
        padding: `"symmetric"` (default), `"same"` or `"valid"`.
        formulation: (keyword, as `jit_compile`) one of `"auto"`,
            `"shift_add"`, `"shift_add_matmul"`, `"shift_add_segment"`,
            `"im2col"`, `"dense"`. For a choice timed on this machine see
            `StripeConv2D.to_compact(..., formulation="calibrate")` and
            `calibrate_formulation`.
        jit_compile: run the layer as its own XLA cluster (kept in an
            exported SavedModel); best with `"shift_add"`.
        **kwargs: `use_bias`, `activation`, initializers and base layer
            arguments as in `keras.layers.Conv2D`.

    Call arguments:
        inputs: tensor `(batch, height, width, in_channels)`.

    Returns:
        Tensor `(batch, out_height, out_width, filters)`.

    Example:

    >>> layer = CompactStripeConv2D(
    ...     8, 3, stripes=[[0], [], [1, 2], [], list(range(8)), [], [], [3],
    ...     []], use_bias=False, formulation="shift_add")
    >>> tuple(layer(keras.ops.ones((2, 8, 8, 4))).shape)
    (2, 8, 8, 8)
    >>> tuple(layer.kernel.shape)
    (1, 1, 4, 12)

    Reference: as `StripeConv2D`.
    """

    _config_attributes = ("padding", "stripes", "formulation", "jit_compile")

    def __init__(
        self,
        filters,
        kernel_size,
        stripes,
        *args,
        formulation="auto",
        jit_compile=False,
        **kwargs,
    ):
        super().__init__(filters, kernel_size, *args, **kwargs)
        if formulation not in FORMULATIONS:
            raise ValueError(
                f"CompactStripeConv2D formulation must be one of "
                f"{FORMULATIONS}. Received: formulation={formulation}"
            )
        kh, kw = self.kernel_size
        stripes = [sorted(int(o) for o in s) for s in stripes]
        if len(stripes) != kh * kw:
            raise ValueError(
                f"CompactStripeConv2D needs one filter list per kernel "
                f"position ({kh * kw}). Received: {len(stripes)} lists"
            )
        for s in stripes:
            if len(set(s)) != len(s) or any(o < 0 or o >= filters for o in s):
                raise ValueError(
                    "CompactStripeConv2D stripes must list distinct filter "
                    f"indices in [0, {filters}). Received: stripes={s}"
                )
        if not any(stripes):
            raise ValueError(
                "CompactStripeConv2D needs at least one stripe (every "
                "stripe of this layer is pruned). Received: stripes=[]"
            )
        self.stripes = stripes
        self.formulation = formulation
        self.jit_compile = bool(jit_compile)

    @classmethod
    def from_dense(cls, kernel, mask, *, bias=None, **kwargs):
        """Builds the layer from a dense folded kernel and a stripe mask.

        Args:
            kernel: NumPy `(kh, kw, in, filters)` kernel (already
                multiplied by the skeleton).
            mask: boolean `(kh, kw, filters)`; the stripes to keep.
            bias: optional `(filters,)` bias.
            **kwargs: further constructor arguments (`strides`, ...).

        Returns:
            A built layer whose weights are the kept stripes.
        """
        kernel = np.asarray(kernel)
        mask = np.asarray(mask, dtype=bool)
        kh, kw, c_in, filters = kernel.shape
        if mask.shape != (kh, kw, filters):
            raise ValueError(
                f"mask shape must be {(kh, kw, filters)}. "
                f"Received: {mask.shape}"
            )
        rows = mask.reshape(kh * kw, filters)  # position p = i * kw + j
        stripes = [np.flatnonzero(row).tolist() for row in rows]
        layer = cls(
            filters,
            (kh, kw),
            stripes=stripes,
            use_bias=bias is not None,
            **kwargs,
        )
        layer.build((None, None, None, c_in))
        if layer.stores_dense_kernel:
            compact = kernel * mask[:, :, None, :]
        else:
            # The kept stripes in `stripe_order()`: row-major (i, j, o).
            compact = kernel.transpose(0, 1, 3, 2)[mask].T[None, None]
        layer._kernel.assign(compact.astype(layer._kernel.dtype))
        if bias is not None:
            layer.bias.assign(np.asarray(bias, layer.bias.dtype))
        return layer

    @property
    def num_stripes(self):
        return sum(len(s) for s in self.stripes)

    def stripe_order(self):
        """`[(i, j, filter), ...]` of the kernel's stripes, in order."""
        kw = self.kernel_size[1]
        return [
            (p // kw, p % kw, o)
            for p, filt in enumerate(self.stripes)
            for o in filt
        ]

    def stripe_mask(self):
        """Boolean `(kh, kw, filters)` mask of the kept stripes."""
        kh, kw = self.kernel_size
        mask = np.zeros((kh, kw, self.filters), dtype=bool)
        for i, j, o in self.stripe_order():
            mask[i, j, o] = True
        return mask

    @property
    def stores_dense_kernel(self):
        """Whether `kernel` is the zero-filled `(kh, kw, C, filters)` one.

        The `"dense"` and `"im2col"` formulations keep the kernel dense
        (rebuilding it from the stripes at every call costs more than the
        call at batch 1); the shift-and-add ones keep one column per kept
        stripe. Parameter counts always count the kept stripes only.
        """
        return self._resolved in ("dense", "im2col")

    def build(self, input_shape):
        c_in = input_shape[-1]
        self._c_in = c_in
        self._plan(c_in)
        kh, kw = self.kernel_size
        shape = (1, 1, c_in, self.num_stripes)
        if self.stores_dense_kernel:
            shape = (kh, kw, c_in, self.filters)
        self._kernel = self.add_weight(
            name="kernel",
            shape=shape,
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
            trainable=True,
            dtype=self.dtype,
        )
        self._build_bias()
        # One XLA cluster per layer: fuses the shifts, the concat and the
        # add into filters into one pass (also inside an exported
        # SavedModel, which keeps the must-compile attribute).
        self._xla_forward = tf.function(
            self._forward, jit_compile=True, autograph=False
        )
        self.built = True

    # === Static index plans (NumPy, computed once) ===

    def _plan(self, c_in):
        kw = self.kernel_size[1]
        sizes = [len(filt) for filt in self.stripes]
        starts = list(itertools.accumulate(sizes, initial=0))
        self._live_positions = [p for p, n in enumerate(sizes) if n]
        # Position-major ranges of the kernel's columns.
        self._ranges = [
            (p // kw, p % kw, starts[p], starts[p + 1])
            for p in self._live_positions
        ]
        # The filter of each stripe column; the add into filters as a 0/1
        # matrix, and as a gather plan: per filter its stripe columns,
        # padded with the index of an extra zero column.
        stripe_filter = [o for filt in self.stripes for o in filt]
        self._stripe_filter = np.asarray(stripe_filter, np.int32)
        self._onehot = np.eye(self.filters, dtype=np.float32)[stripe_filter]
        per_filter = [
            np.flatnonzero(self._stripe_filter == o)
            for o in range(self.filters)
        ]
        width = max(len(v) for v in per_filter)
        index = np.full((self.filters, width), starts[-1], dtype=np.int32)
        for o, cols in enumerate(per_filter):
            index[o, : len(cols)] = cols
        self._gather_index = index.reshape(-1)
        self._gather_width = width
        self._resolved = self._resolve_formulation(c_in)

    def _resolve_formulation(self, c_in):
        if self.formulation != "auto":
            return self.formulation
        kh, kw = self.kernel_size
        sh, sw = self.strides
        # A nominal size: the choice (and so the kernel's storage) must not
        # depend on the input's spatial size, which a reload may not know.
        h = w = 32
        out_pixels = max(
            _out_size(h, kh, sh, self.padding)
            * _out_size(w, kw, sw, self.padding),
            1,
        )
        z_pixels = h * w if (sh, sw) == (1, 1) else out_pixels
        p = self.num_stripes
        dense = kh * kw * c_in * self.filters * out_pixels
        gemm = c_in * p * z_pixels
        # Cost model fitted to per-layer timings on 2 CPU cores at batch 64
        # (bench/stripe_latency.py): besides the stripe GEMM, every stripe
        # output costs about 400 multiply-adds' worth of memory traffic per
        # pixel in plain TF (pad, shift slices, concat) and 250 when XLA
        # fuses them; plain TF also pays the 0/1 matmul into filters.
        if self.jit_compile:
            cost, choice = gemm + 250 * p * out_pixels, "shift_add"
        else:
            cost = gemm + (self.filters + 400) * p * out_pixels
            choice = "shift_add_matmul"
        return choice if dense > 1.15 * cost else "dense"

    # === Forward ===

    def _pads_of(self, inputs):
        kh, kw = self.kernel_size
        sh, sw = self.strides
        shape = inputs.shape
        h = shape[1] if shape[1] is not None else tf.shape(inputs)[1]
        w = shape[2] if shape[2] is not None else tf.shape(inputs)[2]
        top, bottom = _pads(h, kh, sh, self.padding)
        left, right = _pads(w, kw, sw, self.padding)
        ho = (h + top + bottom - kh) // sh + 1
        wo = (w + left + right - kw) // sw + 1
        return (top, bottom, left, right), ho, wo

    def _native_padding(self):
        """`"SAME"`/`"VALID"` where TF's padding equals this layer's."""
        if self.padding == "valid":
            return "VALID"
        if self.padding == "same":
            return "SAME"
        # "symmetric" pads k // 2 on both sides; "SAME" pads the same at
        # stride 1 with odd kernels.
        if self.strides == (1, 1) and all(k % 2 for k in self.kernel_size):
            return "SAME"
        return None

    def _padded(self, inputs):
        pads, ho, wo = self._pads_of(inputs)
        x = inputs
        if any(not isinstance(v, int) or v for v in pads):
            top, bottom, left, right = pads
            x = tf.pad(inputs, [[0, 0], [top, bottom], [left, right], [0, 0]])
        return x, ho, wo

    def _position_slice(self, x, i, j, ho, wo):
        sh, sw = self.strides
        return x[
            :,
            i : i + sh * (ho - 1) + 1 : sh,
            j : j + sw * (wo - 1) + 1 : sw,
            :,
        ]

    def _stripe_outputs(self, inputs, kernel):
        """All kept stripes at the output resolution, `(..., P)`."""
        c_in = kernel.shape[2]
        k2d = tf.reshape(kernel, [c_in, -1])
        if self.strides == (1, 1):
            # One 1x1 GEMM at full resolution, then shift the outputs.
            z = tf.matmul(tf.reshape(inputs, [-1, c_in]), k2d)
            z, ho, wo = self._padded(_as_rows_of(z, inputs))
            parts = [
                self._position_slice(z, i, j, ho, wo)[..., a:b]
                for i, j, a, b in self._ranges
            ]
        else:
            # Subsample the input per position first: the 1x1 work runs
            # at the output resolution only.
            x, ho, wo = self._padded(inputs)
            parts = []
            for i, j, a, b in self._ranges:
                xs = self._position_slice(x, i, j, ho, wo)
                z = tf.matmul(tf.reshape(xs, [-1, c_in]), k2d[:, a:b])
                parts.append(_as_rows_of(z, xs))
        if len(parts) == 1:
            return parts[0]
        return tf.concat(parts, axis=-1)

    def call(self, inputs):
        kernel = tf.cast(self.kernel, inputs.dtype)
        bias = None
        if self.use_bias:
            bias = tf.cast(self.bias, inputs.dtype)
        if self.jit_compile and self._resolved != "dense":
            # (oneDNN's dense conv beats XLA's CPU conv: keep it plain.)
            y = self._xla_forward(inputs, kernel, bias)
        else:
            y = self._forward(inputs, kernel, bias)
        if self.activation is not None:
            y = self.activation(y)
        return y

    def _forward(self, inputs, kernel, bias):
        kh, kw = self.kernel_size
        c_in = kernel.shape[2]
        mode = self._resolved
        if mode == "dense":
            pads, _, _ = self._pads_of(inputs)
            native = self._native_padding()
            if native is not None:
                # TF's own "SAME"/"VALID": the very graph of a plain
                # Conv2D (EXPLICIT padding measured no slower, within noise).
                x, padding = inputs, native
            elif all(isinstance(v, int) for v in pads):
                # Explicit padding inside the conv: no padded copy.
                top, bottom, left, right = pads
                x = inputs
                padding = [[0, 0], [top, bottom], [left, right], [0, 0]]
            else:
                x, _, _ = self._padded(inputs)
                padding = "VALID"
            y = tf.nn.conv2d(
                x, kernel, strides=list(self.strides), padding=padding
            )
        elif mode == "im2col":
            x, ho, wo = self._padded(inputs)
            live = self._live_positions
            full = tf.gather(
                tf.reshape(kernel, [kh * kw, c_in, self.filters]), live, axis=0
            )
            patches = [
                self._position_slice(x, p // kw, p % kw, ho, wo) for p in live
            ]
            patches = patches[0] if len(live) == 1 else tf.concat(patches, -1)
            y = tf.matmul(
                tf.reshape(patches, [-1, len(live) * c_in]),
                tf.reshape(full, [len(live) * c_in, self.filters]),
            )
            y = _as_rows_of(y, patches)
        else:
            z = self._stripe_outputs(inputs, kernel)
            rows = tf.reshape(z, [-1, self.num_stripes])
            if mode == "shift_add_segment":
                y = tf.transpose(
                    tf.math.unsorted_segment_sum(
                        tf.transpose(rows), self._stripe_filter, self.filters
                    )
                )
            elif mode == "shift_add_matmul":
                y = tf.matmul(rows, tf.constant(self._onehot, dtype=z.dtype))
            else:
                rows = tf.concat([rows, tf.zeros_like(rows[:, :1])], axis=-1)
                y = tf.gather(rows, self._gather_index, axis=-1)
                if self._gather_width > 1:
                    y = tf.reshape(y, [-1, self.filters, self._gather_width])
                    y = tf.reduce_sum(y, axis=-1)
            y = _as_rows_of(y, z)
        if bias is not None:
            y = y + bias
        return y

    # === Complexity hooks (tfgraft.complexity) ===

    def complexity(self, convention, input_shape, output_shape):
        """`(flops, params)` of one call; see `tfgraft.complexity`.

        Counted as the reference counts a compacted layer: a 1x1 conv over
        the input channels producing the kept stripes, at the output
        resolution (the full-resolution 1x1 work and the shift-adds are not
        counted). `"pff"` uses 2 FLOPs per multiply-add, the others 1, and
        counts the `(kh, kw, filters)` stripe mask as parameters: the
        reference keeps it as a (boolean, frozen) `Parameter` and its
        counter sums `numel` over all parameters (METHODS.md §2.2).
        """
        c_in = input_shape[-1]
        positions = math.prod(output_shape[1:-1])
        macs = c_in * self.num_stripes * positions
        weights = c_in * self.num_stripes
        bias = self.filters if self.use_bias else 0
        if convention == "pff":
            kh, kw = self.kernel_size
            return 2 * macs, weights + bias + kh * kw * self.filters
        if convention == "ekg":
            return macs, weights
        return macs, weights + bias

    def reference_param_count(self):
        """Kept stripe weights and bias (the reference's trainable count)."""
        return self.complexity("macs", (1, self._c_in), (1, self.filters))[1]
