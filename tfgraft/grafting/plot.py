"""The grafting job's picture: per-layer entropy and invalid filters."""

from tfgraft import plotting


def graft_figure(start, end):
    """The figure of `grafting.png` (see `plot_grafting`).

    Left: every net's per-layer weight entropy at the start (dashed) and
    end (solid), one tick per conv layer named after it. Right: each
    net's count of invalid filters (L1 norm below each threshold) at the
    start (light) and end, each bar labelled with its count; zero counts
    are drawn as zero on an axis that starts at 0.
    """
    plt = plotting.pyplot()
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.5), width_ratios=[3, 1])
    names = list(start[0]["entropy"])
    x = range(len(names))
    for i, (s, e) in enumerate(zip(start, end)):
        for stats, style, when in ((s, "--", "start"), (e, "-", "end")):
            ax0.plot(
                x,
                [stats["entropy"][n] for n in names],
                style,
                color=f"C{i}",
                label=f"net_{i} {when}",
            )
    plotting.layer_ticks(ax0, names)
    ax0.set_xlabel("conv layer (topological order)")
    ax0.set_ylabel("weight entropy (10 bins, nats)")
    ax0.set_title("Per-layer entropy")
    ax0.legend(fontsize=7)

    thresholds = list(start[0]["invalid_filters"]["below"])
    n = len(start)
    width = 0.8 / (2 * n)
    counts = []
    for i, (s, e) in enumerate(zip(start, end)):
        for j, t in enumerate(thresholds):
            left = j - 0.4 + 2 * i * width + width / 2
            pair = (
                s["invalid_filters"]["below"][t],
                e["invalid_filters"]["below"][t],
            )
            bars = ax1.bar(
                [left, left + width],
                pair,
                width,
                color=f"C{i}",
                edgecolor=f"C{i}",
            )
            bars[0].set_alpha(0.4)
            for bar, count in zip(bars, pair):
                ax1.annotate(
                    str(int(count)),
                    (bar.get_x() + bar.get_width() / 2, count),
                    xytext=(0, 2),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
            counts.extend(pair)
    ax1.set_xticks(range(len(thresholds)), [f"L1<{t}" for t in thresholds])
    ax1.set_xlim(-0.5, len(thresholds) - 0.5)
    plotting.count_axis(ax1, counts)
    ax1.set_ylabel("filters")
    total = start[0]["invalid_filters"]["total_filters"]
    ax1.set_title(f"Invalid filters of {total} (light: start)")
    fig.tight_layout()
    return fig


def plot_grafting(path, start, end):
    """Writes `grafting.png`: `start`/`end` are per-net dicts with
    `entropy` ({layer: nats}) and `invalid_filters` ({"below": {threshold:
    count}, "total_filters"}). Returns `path`, or None without
    matplotlib."""
    if plotting.pyplot(path) is None:
        return None
    plotting.save(graft_figure(start, end), path)
    return path
