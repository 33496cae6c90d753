"""Pictures: layer-name ticks, count axes from zero, grafting.png."""

import os

import tensorflow as tf
from matplotlib import pyplot as plt

from tfgraft import plotting
from tfgraft.grafting import plot as graft_plot


def _stats(counts, entropy_shift=0.0):
    names = ["conv1", "block1_conv1", "block1_conv2", "fc"]
    return {
        "entropy": {
            n: 1.5 + 0.1 * k + entropy_shift for k, n in enumerate(names)
        },
        "invalid_filters": {
            "below": {"0.1": counts[0], "0.01": counts[1]},
            "total_filters": 40,
        },
    }


def _tick_labels(ax):
    return [t.get_text() for t in ax.get_xticklabels()]


class PlottingTest(tf.test.TestCase):
    def test_layer_ticks_are_integers_named_after_layers(self):
        fig, ax = plt.subplots()
        names = [f"layer_{i}" for i in range(7)]
        ax.plot(range(7), range(7))
        plotting.layer_ticks(ax, names)
        self.assertAllEqual(ax.get_xticks(), list(range(7)))
        self.assertEqual(_tick_labels(ax), names)
        plt.close(fig)

    def test_many_layers_get_every_kth_name(self):
        fig, ax = plt.subplots()
        names = [f"l{i}" for i in range(100)]
        plotting.layer_ticks(ax, names, max_labels=40)
        # ceil(100 / 40) = 3: names 0, 3, ..., 99.
        self.assertAllEqual(ax.get_xticks(), list(range(0, 100, 3)))
        self.assertEqual(_tick_labels(ax), names[::3])
        plt.close(fig)

    def test_count_axis_starts_at_zero_with_integer_ticks(self):
        fig, ax = plt.subplots()
        ax.bar([0, 1], [0, 0])
        plotting.count_axis(ax, [0, 0])
        self.assertEqual(ax.get_ylim(), (0.0, 1.15))
        ticks = [t for t in ax.get_yticks() if 0 <= t <= 1.15]
        self.assertTrue(all(float(t).is_integer() for t in ticks), ticks)
        plotting.count_axis(ax, [3, 7])
        self.assertAllClose(ax.get_ylim(), (0.0, 7 * 1.15))
        plt.close(fig)


class GraftFigureTest(tf.test.TestCase):
    def test_zero_counts_are_drawn_as_zero(self):
        start = [_stats((0, 0)), _stats((0, 0), 0.2)]
        end = [_stats((0, 0), 0.1), _stats((0, 0), 0.3)]
        fig = graft_plot.graft_figure(start, end)
        entropy_ax, count_ax = fig.axes
        self.assertEqual(
            _tick_labels(entropy_ax),
            ["conv1", "block1_conv1", "block1_conv2", "fc"],
        )
        self.assertAllEqual(entropy_ax.get_xticks(), [0, 1, 2, 3])
        self.assertEqual(count_ax.get_ylim(), (0.0, 1.15))
        # 2 nets x 2 thresholds x (start, end) bars, each labelled "0".
        heights = [p.get_height() for p in count_ax.patches]
        self.assertEqual(heights, [0] * 8)
        self.assertEqual([t.get_text() for t in count_ax.texts], ["0"] * 8)
        self.assertEqual(_tick_labels(count_ax), ["L1<0.1", "L1<0.01"])
        plt.close(fig)

    def test_counts_and_bars_sit_on_their_threshold(self):
        start = [_stats((5, 2)), _stats((4, 1))]
        end = [_stats((3, 0)), _stats((6, 2))]
        fig = graft_plot.graft_figure(start, end)
        count_ax = fig.axes[1]
        self.assertAllClose(count_ax.get_ylim(), (0.0, 6 * 1.15))
        bars = count_ax.patches
        centers = [b.get_x() + b.get_width() / 2 for b in bars]
        # Net-major, then threshold, then (start, end); every bar of
        # threshold j lies within j +- 0.4 around its tick.
        thresholds = [0, 0, 1, 1, 0, 0, 1, 1]
        for c, j in zip(centers, thresholds):
            self.assertBetween(c, j - 0.4, j + 0.4)
        self.assertEqual(
            [b.get_height() for b in bars], [5, 3, 2, 0, 4, 6, 1, 2]
        )
        self.assertEqual(
            [t.get_text() for t in count_ax.texts],
            ["5", "3", "2", "0", "4", "6", "1", "2"],
        )
        plt.close(fig)

    def test_plot_grafting_writes_a_png(self):
        path = os.path.join(self.create_tempdir().full_path, "grafting.png")
        start = [_stats((0, 0))]
        self.assertEqual(graft_plot.plot_grafting(path, start, start), path)
        with open(path, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")


if __name__ == "__main__":
    tf.test.main()
