"""Shared parts of the jobs' PNG pictures (matplotlib is optional)."""

import io as pyio

from absl import logging

from tfgraft import io


def pyplot(path=None):
    """`matplotlib.pyplot` on the Agg backend, or None when matplotlib is
    missing (then a warning names `path`, the picture not written)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
    except ImportError:  # pictures are optional
        if path:
            logging.warning("matplotlib missing; %s not written", path)
        return None
    return plt


def png(fig, dpi=100):
    """`fig` as PNG bytes; closes it."""
    from matplotlib import pyplot as plt

    buf = pyio.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def save(fig, path, dpi=100):
    """Writes `fig` to `path` as a PNG (atomically) and closes it."""
    io.atomic_write_bytes(path, png(fig, dpi))


def layer_ticks(ax, names, max_labels=40, fontsize=6):
    """Integer x ticks, one per layer, labelled with the layer names
    (every k-th name when there are more than `max_labels`)."""
    step = max(1, -(-len(names) // max_labels))
    ticks = list(range(0, len(names), step))
    ax.set_xticks(
        ticks, [names[i] for i in ticks], rotation=90, fontsize=fontsize
    )
    ax.set_xlim(-0.5, len(names) - 0.5)


def count_axis(ax, counts):
    """A y axis for counts: from 0, integer ticks, room above the largest
    (an all-zero panel shows 0..1, not an empty band around 0)."""
    from matplotlib import ticker

    top = max([1, *counts])
    ax.set_ylim(0, top * 1.15)
    ax.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
