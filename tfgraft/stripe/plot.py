"""Pictures of a stripe-pruned network: kept stripes and filters per layer.

Both plots take `path` (the PNG file to write), `layers` (a
`prune.LayerStripes` sequence, in topological order) and a figure `title`,
and return `path`, or None when matplotlib is missing or there are no
layers.
"""

import math

import numpy as np

from tfgraft import plotting


def plot_stripes(path, layers, title="Kept stripes per kernel position"):
    """One `k x k` grid per layer: how many filters keep each position."""
    plt = plotting.pyplot(path)
    if plt is None or not layers:
        return None
    cols = min(len(layers), 10)
    rows = math.ceil(len(layers) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(1.6 * cols, 1.9 * rows + 0.6), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, layer in zip(axes.flat, layers):
        grid = np.asarray(layer.per_position, dtype=float)
        ax.imshow(grid / max(layer.filters, 1), vmin=0, vmax=1, cmap="viridis")
        for (i, j), v in np.ndenumerate(grid):
            ax.text(
                j,
                i,
                str(int(v)),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if v < 0.6 * layer.filters else "black",
            )
        ax.set_title(
            f"{layer.name}\n{layer.kept_filters}/{layer.filters} filters",
            fontsize=6,
        )
    fig.suptitle(f"{title} (cell: filters keeping it)", fontsize=9)
    fig.tight_layout()
    plotting.save(fig, path)
    return path


def plot_filters(path, layers, title="Filters and stripes kept per layer"):
    """Bars of kept/total filters and kept stripe share per layer."""
    plt = plotting.pyplot(path)
    if plt is None or not layers:
        return None
    x = np.arange(len(layers))
    fig, (ax0, ax1) = plt.subplots(
        2, 1, figsize=(max(6, 0.22 * len(layers) + 2), 5.5), sharex=True
    )
    ax0.bar(x, [s.filters for s in layers], color="0.8", label="filters")
    ax0.bar(
        x, [s.kept_filters for s in layers], color="C0", label="kept filters"
    )
    ax0.set_ylabel("filters")
    ax0.legend(fontsize=7)
    ax0.set_title(title, fontsize=9)
    ax1.bar(
        x,
        [100.0 * s.kept_stripes / max(s.stripes, 1) for s in layers],
        color="C1",
    )
    ax1.set_ylabel("kept stripes (%)")
    plotting.layer_ticks(ax1, [s.name for s in layers])
    fig.tight_layout()
    plotting.save(fig, path)
    return path
