"""Extraction: the physically smaller network of a gated sub-network.

The pruned network is built afresh from its channel config (Keras 3 cannot
replace a built layer's variables) and receives sliced weights: conv
kernels by their input and output masks, dense kernels by their input mask,
BN gamma/beta/statistics by their channel mask. Kernels are sliced from the
masked, norm-rescaled kernel the gated layer computes with, so the compact
network's logits equal the masked network's in training and inference
mode (METHODS.md §3.4, §3.8 check 3).
"""

import numpy as np

from tfgraft import models
from tfgraft import surgery
from tfgraft.ekg import errors
from tfgraft.layers import gate as gate_lib


class ExtractionError(errors.EKGError):
    """The compact network does not fit the gated one; names the layer."""


def copy_compact_weights(gated, compact):
    """Copies `gated`'s current sub-network into `compact`, sliced.

    Args:
        gated: a `GatedNetwork` in the state to extract.
        compact: a model with the same layer names whose widths are the
            kept channel counts (e.g. built from `gated.channel_config`).
    """
    masks = gated.masks()

    def kept(group):
        g = gated.group_gate.get(group)
        return None if g is None else np.flatnonzero(masks[g] > 0.5)

    for name, layer in gated.layers.items():
        if not getattr(layer, "weights", None):
            continue
        try:
            target = compact.get_layer(name)
        except ValueError:
            raise ExtractionError(
                f"layer '{name}' is missing from compact model '{compact.name}'"
            ) from None
        kernel = None
        if isinstance(layer, (gate_lib.GatedConv2D, gate_lib.GatedDense)):
            kernel = layer.masked_kernel()
        values = surgery.sliced_weights(layer, gated.graph, kept, kernel)
        surgery.assign(
            name, models.surgery_weights(target), values, ExtractionError
        )


def extract(gated, full_config, *, model_name=None, **build_kwargs):
    """Builds the compact network of `gated`'s current sub-network.

    Args:
        gated: a `GatedNetwork` built with `slots` (so every gate names its
            channel-config slot).
        full_config: the `ChannelConfig` the gated network was built from.
        model_name: Keras name of the new model.
        **build_kwargs: the other `tfgraft.models.build_model` arguments the
            source model was built with (`num_classes`, `input_shape`,
            `preset`, `shortcut`; `mean`/`std` default to the source's
            `standardize` layer).

    Returns:
        `(model, channel_config)`; the config records the preset and
        shortcut it was built with (`ChannelConfig.with_topology`).
    """
    config = gated.channel_config(full_config).with_topology(
        *models.resolve_topology(
            full_config.model,
            build_kwargs.get("preset"),
            build_kwargs.get("shortcut"),
        )
    )
    for key in ("mean", "std"):
        if key not in build_kwargs:
            # Standardize has no weights: take its constants from the source.
            layer = gated.source.get_layer("standardize")
            build_kwargs[key] = getattr(layer, key)
    compact = models.build_model(
        full_config.model,
        channel_config=config,
        model_name=model_name,
        **build_kwargs,
    )
    copy_compact_weights(gated, compact)
    return compact, config
