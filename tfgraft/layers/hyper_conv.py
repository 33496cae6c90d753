"""HyperConv2D: a conv whose kernel a small hypernetwork generates (LW-DNA)."""

import math

import keras
import numpy as np
from keras import ops

from tfgraft.layers.own_variables import OwnConfigMixin
from tfgraft.layers.own_variables import OwnVariablesMixin

# `generate_kernel`'s inputs, in its order.
_HYPERNETWORK = (
    "latent_in", "latent_out", "bias0", "weight1", "bias1", "weight2", "bias2"
)


def generate_kernel(
    latent_in, latent_out, bias0, weight1, bias1, weight2, bias2, kernel_size
):
    """The DHP hypernetwork: latent vectors -> NHWC conv kernel.

    With `I = len(latent_in)`, `O = len(latent_out)`, `D` the embedding
    dimension and `K = kh * kw` (METHODS.md §4.2):

    1. `M = latent_in latent_out^T + bias0`, shape `[I, O]`;
    2. `E = M[..., None] * weight1 + bias1`, shape `[I, O, D]`;
    3. `V = weight2 @ E[..., None] + bias2`, shape `[I, O, K]`;
    4. `V` read as `[I, O, kh, kw]` (PyTorch's `[out, in, kh, kw]` kernel,
       transposed) becomes the Keras kernel `[kh, kw, I, O]`.

    Every step is element-wise in the `(in, out)` pair, so slicing the
    inputs by channel masks gives exactly the same sub-block of the kernel.

    Args:
        latent_in: `[I]` latent vector of the input channels.
        latent_out: `[O]` latent vector of the output channels.
        bias0: `[I, O]`.
        weight1: `[I, O, D]`.
        bias1: `[I, O, D]`.
        weight2: `[I, O, K, D]`.
        bias2: `[I, O, K]`.
        kernel_size: `(kh, kw)` with `kh * kw = K`.

    Returns:
        The kernel, a `[kh, kw, I, O]` tensor.
    """
    kh, kw = kernel_size
    m = latent_in[:, None] * latent_out[None, :] + bias0
    e = m[..., None] * weight1 + bias1
    v = ops.einsum("iokd,iod->iok", weight2, e) + bias2
    i, o = int(latent_in.shape[0]), int(latent_out.shape[0])
    v = ops.reshape(v, (i, o, kh, kw))
    return ops.transpose(v, (2, 3, 0, 1))


def _as_index(mask, size, what, layer):
    """Indices kept by a boolean mask (or an index list); None keeps all."""
    if mask is None:
        return np.arange(size)
    mask = np.asarray(mask)
    if mask.dtype == bool:
        if mask.shape != (size,):
            raise ValueError(
                f"HyperConv2D '{layer}': {what} must have {size} entries. "
                f"Received: shape={mask.shape}"
            )
        return np.flatnonzero(mask)
    index = mask.astype(np.int64).reshape(-1)
    if index.size and (index.min() < 0 or index.max() >= size):
        raise ValueError(
            f"HyperConv2D '{layer}': {what} indices must lie in [0, {size}). "
            f"Received: {index.tolist()}"
        )
    return index


@keras.saving.register_keras_serializable(package="tfgraft")
class HyperConv2D(OwnConfigMixin, OwnVariablesMixin, keras.layers.Conv2D):
    """2D convolution whose kernel is generated from latent vectors.

    Differentiable Hypernetwork Pruning (DHP), used by LW-DNA to shrink a
    widened network: the layer owns no kernel. A tiny per-layer
    hypernetwork (`bias0`, `weight1`, `bias1`, `weight2`, `bias2`, with
    embedding dimension `embedding_dim`) turns the outer product of an
    input latent vector (one entry per input channel) and an output latent
    vector (one per filter) into the kernel, see `generate_kernel`. The
    latents are usually supplied from outside, so that every conv reading
    a channel group uses the group's vector as its input latent and every
    conv writing one residual stream shares its output latent; a channel's
    latent then measures its importance, and pruning the channel removes
    the same entry everywhere. Without supplied latents the layer creates
    its own (standalone use, `.keras` files).

    The hypernetwork starts as in the reference: `weight1 ~ U(±sqrt(3))`,
    `weight2 ~ U(±sqrt(3 / (D * C_in * k*k)))`, biases zero, so the kernel
    variance is about `mean(z_in^2) mean(z_out^2) / (C_in * k*k)`, i.e.
    `1 / fan_in` for N(0, 1) latents. `materialize(mask_in, mask_out)`
    returns the kernel of the kept channels only, which is how the pruned
    (derived) plain network inherits its weights. `kernel_initializer` is
    accepted for drop-in use but unused; `kernel` is a read-only property
    returning the generated kernel.

    Saving: `save_own_variables` stores every variable of the layer,
    supplied latents included. `get_config` cannot record that latents were
    shared, so a layer rebuilt from its config owns copies of them (same
    values after loading, no longer shared); use TF checkpoints for
    networks with shared latents.

    Args:
        filters: number of output filters (= `len(latent_out)`).
        kernel_size: as in `Conv2D`.
        *args: further positional `Conv2D` arguments (`strides`,
            `padding`, ...).
        embedding_dim: hypernetwork embedding dimension `D` (the reference
            default is 8; its ImageNet README run uses 2).
        latent_in: optional 1-D float32 `keras.Variable` with one entry per
            input channel; default: a layer-owned N(0, 1) vector.
        latent_out: optional 1-D float32 `keras.Variable` with `filters`
            entries; default: a layer-owned N(0, 1) vector.
        **kwargs: `Conv2D` and base layer keyword arguments (`groups` must
            be 1, `data_format` channels_last).

    Call arguments:
        inputs: a 4D tensor `(batch, height, width, channels)`.

    Returns:
        The convolution output, as for `Conv2D`.

    Example:

    >>> layer = HyperConv2D(8, 3, padding="same", embedding_dim=2)
    >>> tuple(layer(keras.ops.zeros((2, 8, 8, 4))).shape)
    (2, 8, 8, 8)
    >>> layer.materialize(mask_out=[True, False] * 4).shape
    (3, 3, 4, 4)

    Reference:
        - [Li et al., "The Heterogeneity Hypothesis: Finding Layer-Wise
          Differentiated Network Architectures", CVPR 2021](
          https://arxiv.org/abs/2006.16242)
        - [Li et al., "DHP: Differentiable Meta Pruning via
          HyperNetworks", ECCV 2020](https://arxiv.org/abs/2003.13683)
    """

    _config_attributes = ("embedding_dim",)

    def __init__(
        self,
        filters,
        kernel_size,
        *args,
        embedding_dim=8,
        latent_in=None,
        latent_out=None,
        **kwargs,
    ):
        super().__init__(filters, kernel_size, *args, **kwargs)
        if (
            isinstance(embedding_dim, bool)
            or int(embedding_dim) != embedding_dim
            or embedding_dim < 1
        ):
            raise ValueError(
                "HyperConv2D embedding_dim must be a positive int. "
                f"Received: embedding_dim={embedding_dim}"
            )
        if self.groups != 1:
            raise ValueError(
                f"HyperConv2D supports groups=1 only. Received: "
                f"groups={self.groups}"
            )
        if self.data_format != "channels_last":
            raise ValueError(
                "HyperConv2D supports channels_last only. Received: "
                f"data_format={self.data_format}"
            )
        if self.lora_rank:
            raise ValueError(
                "HyperConv2D has no kernel variable to adapt with LoRA. "
                f"Received: lora_rank={self.lora_rank}"
            )
        for what, latent in (
            ("latent_in", latent_in),
            ("latent_out", latent_out),
        ):
            if latent is not None and len(latent.shape) != 1:
                raise ValueError(
                    f"HyperConv2D {what} must be a 1-D variable. "
                    f"Received: shape={tuple(latent.shape)}"
                )
        if latent_out is not None and latent_out.shape[0] != self.filters:
            raise ValueError(
                f"HyperConv2D latent_out must have filters={self.filters} "
                f"entries. Received: shape={tuple(latent_out.shape)}"
            )
        self.embedding_dim = int(embedding_dim)
        # Assigning supplied variables tracks them as this layer's weights
        # (a model lists a shared one once).
        self.latent_in = latent_in
        self.latent_out = latent_out

    def build(self, input_shape):
        in_channels = input_shape[-1]
        self.input_spec = keras.layers.InputSpec(
            min_ndim=4, axes={-1: in_channels}
        )
        self.compute_output_shape(input_shape)
        if (
            self.latent_in is not None
            and self.latent_in.shape[0] != in_channels
        ):
            raise ValueError(
                f"HyperConv2D '{self.name}': latent_in has "
                f"{self.latent_in.shape[0]} entries but the input has "
                f"{in_channels} channels."
            )
        normal = keras.initializers.RandomNormal(0.0, 1.0)
        i, o, d = in_channels, self.filters, self.embedding_dim
        for name, size in (("latent_in", i), ("latent_out", o)):
            if getattr(self, name) is None:
                latent = self.add_weight(
                    name=name,
                    shape=(size,),
                    initializer=normal,
                    trainable=True,
                    dtype="float32",
                )
                setattr(self, name, latent)
        k = math.prod(self.kernel_size)
        bound1 = math.sqrt(3.0)
        # "Hyperfan-in": weight2 sees D inputs per kernel entry, and the
        # kernel should have variance 1 / (C_in * k*k).
        bound2 = math.sqrt(3.0 / (d * i * k))
        uniform = keras.initializers.RandomUniform
        for name, shape, initializer in (
            ("bias0", (i, o), "zeros"),
            ("weight1", (i, o, d), uniform(-bound1, bound1)),
            ("bias1", (i, o, d), "zeros"),
            ("weight2", (i, o, k, d), uniform(-bound2, bound2)),
            ("bias2", (i, o, k), "zeros"),
        ):
            variable = self.add_weight(
                name=name, shape=shape, initializer=initializer, trainable=True
            )
            setattr(self, name, variable)
        self._build_bias()
        self.built = True

    @property
    def kernel(self):
        if not self.built:
            raise AttributeError(
                f"HyperConv2D '{self.name}' has no kernel before it is built."
            )
        return generate_kernel(
            *self.hypernetwork_variables(), self.kernel_size
        )

    def hypernetwork_variables(self):
        """`[latent_in, latent_out, bias0, weight1, bias1, weight2, bias2]`."""
        return [getattr(self, name) for name in _HYPERNETWORK]

    def materialize(self, mask_in=None, mask_out=None):
        """Generates the kernel of the kept channels only.

        Slices both latents and every hypernetwork tensor by the masks and
        runs the hypernetwork on the slices, which equals slicing the full
        kernel (the generation is element-wise per channel pair).

        Args:
            mask_in: boolean mask over the input channels, or their indices;
                None keeps all.
            mask_out: the same over the filters.

        Returns:
            A float32 numpy kernel `[kh, kw, kept_in, kept_out]`.
        """
        if not self.built:
            raise ValueError(
                f"HyperConv2D '{self.name}' must be built before materialize."
            )
        z_in, z_out, *net = [
            ops.convert_to_numpy(v).astype(np.float32)
            for v in self.hypernetwork_variables()
        ]
        rows = _as_index(mask_in, z_in.shape[0], "mask_in", self.name)
        cols = _as_index(mask_out, z_out.shape[0], "mask_out", self.name)
        kernel = generate_kernel(
            z_in[rows],
            z_out[cols],
            *(x[rows][:, cols] for x in net),
            self.kernel_size,
        )
        return ops.convert_to_numpy(kernel).astype(np.float32)

    def _saved_variables(self):
        # A fixed order: supplied latents are tracked before own ones, so
        # `self.variables` would order them differently.
        bias = [self.bias] if self.use_bias else []
        return self.hypernetwork_variables() + bias
