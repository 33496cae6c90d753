"""Tests for tfgraft.grafting.criteria (METHODS.md §1.2, §1.7 checks 1, 7)."""

import math

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tfgraft.grafting import criteria

F32 = np.float32


def np_histogram(x, num_bins=10):
    """The reference's bin counts: one pair of float32 comparisons per bin."""
    x = np.asarray(x, np.float32).reshape(-1)
    lo = x.min()
    step = (x.max() - lo) / F32(num_bins)
    counts = []
    for k in range(num_bins):
        lower = lo + F32(k) * step
        upper = lo + F32(k + 1) * step
        counts.append(int(np.sum((x >= lower) & (x < upper))))
    return np.array(counts)


def np_entropy(x, num_bins=10):
    size = F32(np.asarray(x).size)
    h = F32(0.0)
    for count in np_histogram(x, num_bins):
        p = F32(count) / size
        if p > 0:
            h -= p * np.log(p)
    return h


def in_mode(fn, mode):
    """`fn` run eagerly, as a tf.function, or XLA-compiled."""
    if mode == "eager":
        return fn
    return tf.function(fn, jit_compile=mode == "xla")


MODES = (("eager", "eager"), ("graph", "graph"), ("xla", "xla"))


def np_filter_rows(kernel, axis=-1):
    return np.moveaxis(np.asarray(kernel), axis, 0).reshape(
        np.asarray(kernel).shape[axis], -1
    )


class EntropyTest(tf.test.TestCase, parameterized.TestCase):
    def test_arange_ten(self):
        # §1.7 check 1: the max (9) is never counted, so H = 0.9 ln 10.
        self.assertAllClose(
            criteria.entropy(tf.range(10.0)), 0.9 * math.log(10), atol=1e-5
        )

    @parameterized.named_parameters(
        ("zeros", np.zeros([3, 3, 2, 4])),
        ("ones", np.ones([7])),
        ("negative_const", np.full([2, 5], -3.7)),
        ("single_element", np.array([1.5])),
    )
    def test_constant_is_zero(self, x):
        h = criteria.entropy(tf.constant(x, tf.float32))
        self.assertEqual(h.dtype, tf.float32)
        self.assertEqual(float(h), 0.0)

    @parameterized.named_parameters(
        ("vector", (10,), 0),
        ("kernel", (3, 3, 4, 8), 1),
        ("pointwise", (1, 1, 16, 32), 2),
        ("matrix", (5, 7), 3),
        ("large", (3, 3, 64, 64), 4),
    )
    def test_matches_numpy_reference(self, shape, seed):
        x = np.random.default_rng(seed).normal(size=shape).astype(F32)
        self.assertAllClose(criteria.entropy(x), np_entropy(x), atol=1e-6)

    def test_repeated_max_values_not_counted(self):
        rng = np.random.default_rng(5)
        x = rng.normal(size=40).astype(F32)
        x[:7] = x.max() + 1.0  # seven copies of the maximum
        x[7:10] = x.min()  # repeated minimum: counted in bin 0
        self.assertEqual(np_histogram(x).sum(), 33)
        self.assertAllClose(criteria.entropy(x), np_entropy(x), atol=1e-6)
        self.assertAllEqual(
            criteria._row_histograms(tf.constant(x[None]), 10)[0],
            np_histogram(x),
        )

    @parameterized.named_parameters(*MODES)
    def test_elements_on_bin_edges_match_reference_exactly(self, mode):
        # For this range, floor((edge_k - lo) / step) != k for k = 2 and 7:
        # a floor-based bin index would move those elements.
        lo, hi = F32(0.64042264), F32(0.955123)
        step = (hi - lo) / F32(10)
        edges = np.array([lo + F32(k) * step for k in range(11)], F32)
        below = np.nextafter(edges[1:], F32(-np.inf))
        x = np.concatenate([edges, below, [lo, hi, hi]]).astype(F32)
        expected = np_histogram(x)
        floor_bins = np.floor((x - lo) / step).astype(int)
        floor_counts = np.bincount(floor_bins, minlength=11)[:10]
        # Guard: the data really separates the exact and the floor rule.
        self.assertNotAllEqual(floor_counts, expected)
        histograms = in_mode(criteria._row_histograms, mode)
        self.assertAllEqual(histograms(tf.constant(x[None]), 10)[0], expected)
        entropy = in_mode(criteria.entropy, mode)
        self.assertAllClose(entropy(x), np_entropy(x), atol=1e-6)

    @parameterized.named_parameters(*MODES)
    def test_histograms_exact_on_random_ranges(self, mode):
        # Graph mode once rewrote step = d / 10 as d * 0.1 (one ulp off for
        # ~20% of ranges): counts must equal the reference in every mode.
        rng = np.random.default_rng(7)
        rows = rng.normal(size=(64, 300)).astype(F32)
        rows *= rng.uniform(1e-3, 1e3, size=(64, 1)).astype(F32)
        rows += rng.normal(size=(64, 1)).astype(F32)
        # Elements exactly on each row's edges, where a one-ulp change of
        # step or edge moves them to another bin.
        for r in range(64):
            lo = rows[r].min()
            step = (rows[r].max() - lo) / F32(10)
            rows[r, :9] = [lo + F32(k) * step for k in range(1, 10)]
        histograms = in_mode(criteria._row_histograms, mode)
        got = histograms(tf.constant(rows), 10)
        self.assertAllEqual(got, [np_histogram(row) for row in rows])

    @parameterized.named_parameters(*MODES)
    def test_round_to_float32_matches_cast(self, mode):
        rng = np.random.default_rng(3)
        x = rng.uniform(0, 1, 4000) * 2.0 ** rng.integers(-100, 100, 4000)
        # Exact float32 ties (24 bits + a half) must round to even.
        ties = (np.arange(1, 401, dtype=np.float64) * 2 + 1) * 2.0**-25 + 1
        x = np.concatenate([x, ties, [0.0, 1.0, 3.0 * 2.0**100]])
        got = in_mode(criteria._round_to_float32, mode)(tf.constant(x))
        self.assertEqual(got.dtype, tf.float32)
        self.assertAllEqual(got, x.astype(F32))

    @parameterized.named_parameters(
        ("conv", (3, 3, 4, 8), -1, 0),
        ("pointwise", (1, 1, 8, 16), -1, 1),
        ("depthwise", (3, 3, 6, 1), 2, 2),
        ("dense", (12, 5), -1, 3),
    )
    def test_filter_entropy_matches_numpy_loop(self, shape, axis, seed):
        kernel = np.random.default_rng(seed).normal(size=shape).astype(F32)
        kernel.reshape(-1)[::5] = 0.0  # ties inside filters
        expected = [np_entropy(row) for row in np_filter_rows(kernel, axis)]
        got = criteria.filter_entropy(kernel, axis=axis)
        self.assertEqual(got.shape, (shape[axis],))
        self.assertAllClose(got, expected, atol=1e-6)

    def test_filter_entropy_constant_filter(self):
        kernel = np.random.default_rng(0).normal(size=(3, 3, 2, 3))
        kernel[..., 1] = 0.25
        got = criteria.filter_entropy(tf.constant(kernel, tf.float32))
        self.assertEqual(float(got[1]), 0.0)
        self.assertGreater(float(got[0]), 1.0)

    @parameterized.named_parameters(("graph", False), ("xla", True))
    def test_tf_function_matches_eager(self, jit_compile):
        kernel = tf.random.stateless_normal([3, 3, 8, 16], seed=[1, 2])
        layer_fn = tf.function(criteria.entropy, jit_compile=jit_compile)
        filter_fn = tf.function(
            criteria.filter_entropy, jit_compile=jit_compile
        )
        self.assertAllClose(
            layer_fn(kernel), criteria.entropy(kernel), atol=1e-6
        )
        self.assertAllClose(
            filter_fn(kernel), criteria.filter_entropy(kernel), atol=1e-6
        )
        self.assertAllClose(
            filter_fn(kernel),
            [np_entropy(r) for r in np_filter_rows(kernel.numpy())],
            atol=1e-6,
        )

    def test_casts_low_precision_to_float32(self):
        x = tf.constant(np.arange(10.0), tf.bfloat16)
        h = criteria.entropy(x)
        self.assertEqual(h.dtype, tf.float32)
        self.assertAllClose(h, 0.9 * math.log(10), atol=1e-5)

    @parameterized.named_parameters(("zero", 0), ("float", 2.5), ("bool", True))
    def test_bad_num_bins(self, num_bins):
        with self.assertRaisesRegex(ValueError, "num_bins="):
            criteria.entropy(tf.ones([4]), num_bins=num_bins)

    def test_bad_filter_axis(self):
        with self.assertRaisesRegex(ValueError, "axis=4"):
            criteria.filter_entropy(tf.ones([3, 3, 2, 2]), axis=4)


class L1Test(tf.test.TestCase, parameterized.TestCase):
    def test_l1_is_sum_of_abs(self):
        x = np.random.default_rng(0).normal(size=(3, 3, 4, 8)).astype(F32)
        self.assertAllClose(criteria.l1(x), np.abs(x).sum(), rtol=1e-6)

    @parameterized.named_parameters(
        ("conv", (3, 3, 4, 8), -1), ("depthwise", (3, 3, 6, 1), 2)
    )
    def test_filter_l1(self, shape, axis):
        x = np.random.default_rng(1).normal(size=shape).astype(F32)
        expected = np.abs(np_filter_rows(x, axis)).sum(axis=1)
        got = criteria.filter_l1(x, axis=axis)
        self.assertAllClose(got, expected, rtol=1e-6)
        self.assertAllClose(tf.reduce_sum(got), criteria.l1(x), rtol=1e-5)

    @parameterized.named_parameters(
        ("thr_0p1", 0.1, 3),
        ("thr_0p01", 0.01, 1),
        ("thr_0p02", 0.02, 2),
        ("thr_0", 0.0, 0),
        ("thr_1000", 1000.0, 5),
    )
    def test_invalid_filter_count(self, threshold, expected):
        kernel = np.zeros((3, 3, 2, 5), F32)  # filter 0: L1 = 0
        kernel[..., 1] = 0.001  # L1 = 0.018
        kernel[..., 2] = -0.01  # L1 = 0.18
        kernel[..., 3] = 1.0  # L1 = 18
        kernel[0, 0, 0, 4] = -0.05  # L1 = 0.05
        count = criteria.invalid_filter_count(kernel, threshold)
        self.assertEqual(count.dtype, tf.int32)
        self.assertEqual(int(count), expected)

    def test_invalid_filter_count_negative_threshold(self):
        with self.assertRaisesRegex(ValueError, "threshold=-1"):
            criteria.invalid_filter_count(tf.ones([1, 1, 1, 2]), -1)


class AlphaTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("equal", 0.0, 0.50),
        ("plus_0p001", 0.001, 0.56),
        ("plus_0p01", 0.01, 0.67),
        ("minus_0p01", -0.01, 0.33),
        ("plus_0p1", 0.1, 0.70),
        ("minus_0p1", -0.1, 0.30),
        ("plus_2", 2.0, 0.70),
        ("minus_2", -2.0, 0.30),
    )
    def test_table(self, delta, expected):
        h_peer = 2.0
        got = criteria.alpha(h_peer + delta, h_peer)
        self.assertEqual(got.dtype, tf.float32)
        self.assertAllClose(got, expected, atol=1e-7)

    def test_matches_python_reference_on_float32_entropies(self):
        rng = np.random.default_rng(0)
        h_self = rng.uniform(1.9, 2.1, size=500).astype(F32)
        h_peer = rng.uniform(1.9, 2.1, size=500).astype(F32)
        expected = [
            round(0.4 / np.pi * np.arctan(500 * (float(s) - float(p))) + 0.5, 2)
            for s, p in zip(h_self, h_peer)
        ]
        got = criteria.alpha(h_self, h_peer)
        self.assertAllClose(got, expected, atol=1e-7)
        self.assertGreater(len(set(expected)), 20)

    def test_symmetric(self):
        delta = np.linspace(-0.2, 0.2, 801).astype(F32)
        up = criteria.alpha(delta, 0.0)
        down = criteria.alpha(-delta, 0.0)
        self.assertAllClose(up + down, np.ones_like(delta), atol=1e-6)
        self.assertAllInRange(up, 0.3, 0.7)
        # Two decimals: 100 * alpha is an integer.
        self.assertAllClose(up * 100, np.round(up * 100), atol=1e-4)

    def test_custom_a_and_c(self):
        # A = 0 disables grafting's preference: always 0.5.
        self.assertAllClose(criteria.alpha(3.0, 1.0, a=0.0), 0.5)
        self.assertAllClose(criteria.alpha(3.0, 1.0, a=1.0), 1.0)
        self.assertAllClose(criteria.alpha(1.0, 0.0, a=0.4, c=1.0), 0.60)
        # Tensors pass through without Python validation (no retracing).
        got = criteria.alpha(1.0, 0.0, a=tf.constant(0.4), c=tf.constant(1.0))
        self.assertAllClose(got, 0.60)

    def test_in_tf_function(self):
        fn = tf.function(criteria.alpha, jit_compile=True)
        self.assertAllClose(fn(tf.constant(2.01), tf.constant(2.0)), 0.67)

    @parameterized.named_parameters(
        ("a_negative", dict(a=-0.1), "a=-0.1"),
        ("a_above_one", dict(a=1.5), "a=1.5"),
        ("c_zero", dict(c=0), "c=0"),
        ("c_negative", dict(c=-5.0), "c=-5.0"),
    )
    def test_bad_arguments(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            criteria.alpha(1.0, 0.0, **kwargs)


class BNGammaWeightsTest(tf.test.TestCase):
    def test_values(self):
        g_self = np.array([1.0, -2.0, 0.0, 0.0, 3.0], F32)
        g_peer = np.array([3.0, 2.0, 0.0, -1.0, 0.0], F32)
        got = criteria.bn_gamma_weights(g_self, g_peer)
        self.assertAllClose(got, [0.25, 0.5, 0.5, 0.0, 1.0])

    def test_random_and_symmetric(self):
        rng = np.random.default_rng(0)
        g_self = rng.normal(size=64).astype(F32)
        g_peer = rng.normal(size=64).astype(F32)
        expected = np.abs(g_self) / (np.abs(g_self) + np.abs(g_peer))
        got = criteria.bn_gamma_weights(g_self, g_peer)
        back = criteria.bn_gamma_weights(g_peer, g_self)
        self.assertAllClose(got, expected, rtol=1e-6)
        self.assertAllClose(got + back, np.ones(64), atol=1e-6)

    def test_tiny_denominator_counts_as_zero(self):
        got = criteria.bn_gamma_weights([1e-14, 1e-3], [0.0, 0.0], eps=1e-12)
        self.assertAllClose(got, [0.5, 1.0])


if __name__ == "__main__":
    tf.test.main()
