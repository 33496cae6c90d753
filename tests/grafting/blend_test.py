"""Tests for tfgraft.grafting.blend (METHODS.md §1.2-§1.3, §1.6, §1.7)."""

import itertools

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tfgraft.grafting import blend
from tfgraft.grafting import criteria

F32 = np.float32

# A tiny conv -> BN -> conv -> BN -> FC net as a flat tensor list.
SHAPES = (
    (3, 3, 2, 3),  # 0 conv1 kernel
    (3,),  # 1 bn1 gamma
    (3,),  # 2 bn1 beta
    (3,),  # 3 bn1 moving mean
    (3,),  # 4 bn1 moving variance
    (3, 3, 3, 4),  # 5 conv2 kernel
    (4,),  # 6 conv2 bias
    (4,),  # 7 bn2 gamma
    (4,),  # 8 bn2 beta
    (4,),  # 9 bn2 moving mean
    (4,),  # 10 bn2 moving variance
    (4, 5),  # 11 fc kernel
    (5,),  # 12 fc bias
)
CONV_TENSORS = (0, 5)
# The conv whose alpha each tensor uses: BN and bias follow their conv, the
# FC follows the last conv.
SOURCES = (0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1)
UNITS = (
    blend.FilterGraftUnit(kernel=0, bn=(1, 2, 3, 4)),
    blend.FilterGraftUnit(kernel=5, bn=(7, 8, 9, 10), bias=6, prev=0),
)


def random_net(seed):
    rng = np.random.default_rng(seed)
    net = [rng.normal(size=s).astype(F32) for s in SHAPES]
    net[4] = np.abs(net[4]) + 0.5  # variances are positive
    net[10] = np.abs(net[10]) + 0.5
    return net


def layer_alphas(nets, peers=None):
    info = [[criteria.entropy(n[t]) for t in CONV_TENSORS] for n in nets]
    return blend.expand_alphas(blend.ring_alphas(info, peers=peers), SOURCES)


class BlendTest(tf.test.TestCase, parameterized.TestCase):
    def test_scalar_alpha(self):
        got = blend.blend([1.0, 2.0], [3.0, 6.0], 0.25)
        self.assertAllClose(got, [2.5, 5.0])

    def test_per_channel_alpha(self):
        own = np.ones((2, 3), F32)
        peer = np.zeros((2, 3), F32)
        got = blend.blend(own, peer, tf.constant([0.1, 0.5, 0.9]))
        self.assertAllClose(got, [[0.1, 0.5, 0.9]] * 2)

    def test_half_alpha_on_identical_inputs_is_exact(self):
        x = np.random.default_rng(0).normal(size=100).astype(F32)
        self.assertAllEqual(blend.blend(x, x, 0.5), x)

    def test_rejects_integers(self):
        with self.assertRaisesRegex(ValueError, "own.dtype"):
            blend.blend(tf.constant([1]), tf.constant([2]), 0.5)

    @parameterized.named_parameters(
        ("one", 1, [0]),
        ("two", 2, [1, 0]),
        ("three", 3, [2, 0, 1]),
        ("four", 4, [3, 0, 1, 2]),
    )
    def test_ring_peers(self, num_nets, expected):
        self.assertEqual(blend.ring_peers(num_nets), expected)

    @parameterized.named_parameters(("zero", 0), ("float", 2.0))
    def test_ring_peers_bad(self, num_nets):
        with self.assertRaisesRegex(ValueError, "num_nets="):
            blend.ring_peers(num_nets)

    def test_ring_alphas_and_expand(self):
        info = [[2.0, 1.0], [2.01, 1.0], [2.0, 1.1]]
        alphas = blend.ring_alphas(info)  # peers [2, 0, 1]
        self.assertAllClose(alphas[0], [0.50, 0.30])
        self.assertAllClose(alphas[1], [0.67, 0.50])
        self.assertAllClose(alphas[2], [0.33, 0.70])
        per_tensor = blend.expand_alphas(alphas, [0, 0, 1, 1, 1])
        self.assertAllClose(per_tensor[2], [0.33, 0.33, 0.7, 0.7, 0.7])


class LayerLevelTest(tf.test.TestCase, parameterized.TestCase):
    def test_identical_nets_unchanged(self):
        # §1.7 check 2: equal entropies give alpha 0.5, an exact no-op.
        nets = [random_net(0)] * 3
        grafted = blend.graft_layer_level(nets, layer_alphas(nets))
        for net in grafted:
            for got, want in zip(net, nets[0]):
                self.assertAllEqual(got, want)

    def test_matches_formula(self):
        nets = [random_net(s) for s in range(3)]
        alphas = layer_alphas(nets)
        grafted = blend.graft_layer_level(nets, alphas)
        for i, p in enumerate([2, 0, 1]):
            for t in range(len(SHAPES)):
                a = float(alphas[i][t])
                want = a * nets[i][t] + (1 - a) * nets[p][t]
                self.assertAllClose(grafted[i][t], want, atol=1e-6)
        # The nets really differ, so alpha is not 0.5 everywhere.
        self.assertNotAllClose(alphas[0], 0.5 * np.ones(len(SHAPES)))

    def test_none_alpha_keeps_the_own_tensor(self):
        # The VGG16 layer-level scope: conv bias (6) and FC (11, 12) stay.
        nets = [random_net(s) for s in range(3)]
        alphas = layer_alphas(nets)
        kept = (6, 11, 12)
        scoped = [
            [None if t in kept else a[t] for t in range(len(SHAPES))]
            for a in alphas
        ]
        grafted = blend.graft_layer_level(nets, scoped)
        full = blend.graft_layer_level(nets, alphas)
        for i in range(3):
            for t in range(len(SHAPES)):
                if t in kept:
                    self.assertAllEqual(grafted[i][t], nets[i][t])
                    self.assertNotAllClose(full[i][t], nets[i][t])
                else:
                    self.assertAllEqual(grafted[i][t], full[i][t])

    def test_two_nets_collapse(self):
        # §1.6/§1.7 check 3: alpha(d) + alpha(-d) = 1 makes both equal.
        nets = [random_net(1), random_net(2)]
        alphas = layer_alphas(nets)
        self.assertAllClose(alphas[0] + alphas[1], np.ones(len(SHAPES)))
        grafted = blend.graft_layer_level(nets, alphas)
        for a, b in zip(*grafted):
            self.assertAllClose(a, b, atol=1e-6, rtol=0)
        self.assertNotAllClose(grafted[0][0], nets[0][0])

    def test_three_nets_depend_on_self_and_peer_only(self):
        # §1.7 check 4: net i reads nets i and i - 1 only.
        nets = [random_net(s) for s in range(3)]
        alphas = layer_alphas(nets)
        base = blend.graft_layer_level(nets, alphas)
        changed = list(nets)
        changed[2] = random_net(9)  # net 1 reads nets 1 and 0 only
        new_alphas = list(alphas)
        new_alphas[0] = layer_alphas(changed)[0]
        again = blend.graft_layer_level(changed, new_alphas)
        for got, want in zip(again[1], base[1]):
            self.assertAllEqual(got, want)
        self.assertNotAllClose(again[0][0], base[0][0])

    @parameterized.named_parameters(
        (f"perm_{''.join(map(str, p))}", p)
        for p in itertools.permutations(range(3))
    )
    def test_three_nets_order_independent(self, perm):
        nets = [random_net(s) for s in range(3)]
        base = blend.graft_layer_level(nets, layer_alphas(nets))
        # Process the nets in another order: relabel them and their peers.
        ring = blend.ring_peers(3)
        position = {n: k for k, n in enumerate(perm)}
        permuted = [nets[n] for n in perm]
        peers = [position[ring[n]] for n in perm]
        got = blend.graft_layer_level(
            permuted, layer_alphas(permuted, peers), peers=peers
        )
        for k, n in enumerate(perm):
            for a, b in zip(got[k], base[n]):
                self.assertAllEqual(a, b)

    def test_graft_step_on_variables_reads_pre_graft_values(self):
        nets = [random_net(s) for s in range(3)]
        expected = blend.graft_layer_level(nets, layer_alphas(nets))
        variables = [[tf.Variable(t) for t in net] for net in nets]

        @tf.function
        def graft_step():
            snapshots = [[v.read_value() for v in net] for net in variables]
            info = [
                [criteria.entropy(n[t]) for t in CONV_TENSORS]
                for n in snapshots
            ]
            alphas = blend.expand_alphas(blend.ring_alphas(info), SOURCES)
            new = blend.graft_layer_level(snapshots, alphas)
            # Assign net by net: a sequential in-place graft would let net 1
            # read net 0's grafted weights.
            for net_vars, net_new in zip(variables, new):
                for v, t in zip(net_vars, net_new):
                    v.assign(t)

        graft_step()
        for net_vars, net_expected in zip(variables, expected):
            for v, want in zip(net_vars, net_expected):
                self.assertAllClose(v, want, atol=1e-6, rtol=0)

    def test_sequential_in_place_graft_differs(self):
        # Guard for the test above: reading already grafted weights changes
        # net 1's result, so that test can tell the two apart.
        nets = [random_net(s) for s in range(3)]
        alphas = layer_alphas(nets)
        right = blend.graft_layer_level(nets, alphas)
        net0 = right[0]
        wrong1 = [
            blend.blend(nets[1][t], net0[t], alphas[1][t])
            for t in range(len(SHAPES))
        ]
        self.assertNotAllClose(wrong1[0], right[1][0])

    def test_bad_alpha_lengths(self):
        nets = [random_net(0), random_net(1)]
        with self.assertRaisesRegex(ValueError, "one alpha per tensor"):
            blend.graft_layer_level(nets, [[0.5], [0.5]])
        with self.assertRaisesRegex(ValueError, "one entry per net"):
            blend.graft_layer_level(nets, [[0.5] * len(SHAPES)])
        with self.assertRaisesRegex(ValueError, "peers="):
            blend.graft_layer_level(
                nets, [[0.5] * len(SHAPES)] * 2, peers=[1, 2]
            )


def np_filter_graft(own, peer):
    """METHODS.md §1.3 as explicit loops over channels."""
    w1 = np.abs(own[1]) / (np.abs(own[1]) + np.abs(peer[1]))
    w2 = np.abs(own[7]) / (np.abs(own[7]) + np.abs(peer[7]))
    new = [t.copy() for t in own]
    for o in range(3):
        new[0][..., o] = w1[o] * own[0][..., o] + (1 - w1[o]) * peer[0][..., o]
    for t in (1, 2, 3, 4):
        new[t] = w1 * own[t] + (1 - w1) * peer[t]
    for o in range(4):
        for j in range(3):
            own_weight = w2[o] * w1[j]
            new[5][:, :, j, o] = (
                own_weight * own[5][:, :, j, o]
                + (1 - own_weight) * peer[5][:, :, j, o]
            )
    for t in (7, 8, 9, 10):
        new[t] = w2 * own[t] + (1 - w2) * peer[t]
    return new, w1, w2


class FilterLevelTest(tf.test.TestCase, parameterized.TestCase):
    def test_matches_numpy_loop(self):
        nets = [random_net(3), random_net(4)]
        grafted = blend.graft_filter_level(nets, UNITS)
        for i, p in ((0, 1), (1, 0)):
            want, _, _ = np_filter_graft(nets[i], nets[p])
            for t, (got, exp) in enumerate(zip(grafted[i], want)):
                self.assertAllClose(got, exp, atol=1e-6, msg=f"tensor {t}")
        # Conv bias and FC untouched (§1.3).
        for t in (6, 11, 12):
            self.assertAllEqual(grafted[0][t], nets[0][t])

    def test_bn_weights_are_gamma_ratios(self):
        # §1.7 check 7: channel j of every BN tensor uses |g_r|/(|g_r|+|g_d|).
        nets = [random_net(5), random_net(6)]
        grafted = blend.graft_filter_level(nets, UNITS)
        w = np.abs(nets[0][7]) / (np.abs(nets[0][7]) + np.abs(nets[1][7]))
        for t in (7, 8, 9, 10):
            got = (grafted[0][t] - nets[1][t]) / (nets[0][t] - nets[1][t])
            self.assertAllClose(got, w, atol=1e-5)

    def test_identical_nets_unchanged(self):
        net = random_net(7)
        net[1][1] = 0.0  # a dead channel: 0/0 must give 0.5, not NaN
        grafted = blend.graft_filter_level([net, net, net], UNITS)
        for out in grafted:
            for got, want in zip(out, net):
                self.assertAllEqual(got, want)

    def test_blend_conv_bias(self):
        nets = [random_net(3), random_net(4)]
        grafted = blend.graft_filter_level(nets, UNITS, blend_conv_bias=True)
        _, _, w2 = np_filter_graft(nets[0], nets[1])
        want = w2 * nets[0][6] + (1 - w2) * nets[1][6]
        self.assertAllClose(grafted[0][6], want, atol=1e-6)

    def test_depthwise_chain(self):
        # 1x1 expand (3 ch) -> BN -> depthwise 3x3 -> BN.
        rng = np.random.default_rng(8)
        shapes = [(1, 1, 2, 3), (3,), (3,), (3, 3, 3, 1), (3,), (3,)]
        nets = [[rng.normal(size=s).astype(F32) for s in shapes] for _ in "ab"]
        units = [
            blend.FilterGraftUnit(kernel=0, bn=(1, 2)),
            blend.FilterGraftUnit(kernel=3, bn=(4, 5), prev=0, out_axis=2),
        ]
        grafted = blend.graft_filter_level(nets, units)
        own, peer = nets
        w_exp = criteria.bn_gamma_weights(own[1], peer[1]).numpy()
        w_dw = criteria.bn_gamma_weights(own[4], peer[4]).numpy()
        want = np.empty_like(own[3])
        for c in range(3):
            ow = w_dw[c] * w_exp[c]
            want[:, :, c, 0] = (
                ow * own[3][:, :, c, 0] + (1 - ow) * peer[3][:, :, c, 0]
            )
        self.assertAllClose(grafted[0][3], want, atol=1e-6)

    def test_in_tf_function(self):
        nets = [random_net(3), random_net(4)]
        eager = blend.graft_filter_level(nets, UNITS)
        fn = tf.function(lambda n: blend.graft_filter_level(n, UNITS))
        graph = fn([[tf.constant(t) for t in net] for net in nets])
        for a, b in zip(eager[0] + eager[1], graph[0] + graph[1]):
            self.assertAllClose(a, b, atol=1e-7)

    @parameterized.named_parameters(
        (
            "shared_tensor",
            (
                blend.FilterGraftUnit(kernel=0, bn=(1, 2, 3, 4)),
                blend.FilterGraftUnit(kernel=5, bn=(1, 8, 9, 10)),
            ),
            "Tensor 1 appears",
        ),
        (
            "bad_prev",
            (blend.FilterGraftUnit(kernel=0, bn=(1,), prev=0),),
            "prev=0",
        ),
        (
            "out_of_range",
            (blend.FilterGraftUnit(kernel=0, bn=(99,)),),
            "tensor 99",
        ),
        (
            "wrong_channel_count",
            (blend.FilterGraftUnit(kernel=5, bn=(1,)),),
            "w_out needs one weight per channel",
        ),
    )
    def test_bad_units(self, units, message):
        nets = [random_net(0), random_net(1)]
        with self.assertRaisesRegex(ValueError, message):
            blend.graft_filter_level(nets, units)

    def test_bad_out_axis(self):
        with self.assertRaisesRegex(ValueError, "out_axis=0"):
            blend.FilterGraftUnit(kernel=0, bn=(1,), out_axis=0)


if __name__ == "__main__":
    tf.test.main()
