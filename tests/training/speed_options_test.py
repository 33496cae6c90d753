"""Speed options do not change results.

Each option that only makes training faster (XLA on the forward/backward,
steps per `tf.function` call, concurrent nets, the fused BN kernel, oneDNN
kernels) must give the default's loss trajectory and final weights within
float tolerance, on a small zoo ResNet with two nets. Mixed precision is the
one speed option that changes numerics by design and is not checked here.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized

from tfgraft import models
from tfgraft.layers import FusedBatchNormalization
from tfgraft.training import optimizers
from tfgraft.training import trainer as trainer_lib

_STEPS = 4
_BATCH = 8
_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _net(seed, keras_bn=False):
    keras.utils.set_random_seed(seed)
    net = models.build_model(
        "resnet20", width_mult=0.25, input_shape=(16, 16, 3)
    )
    if not keras_bn:
        return net

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, FusedBatchNormalization):
            return keras.layers.BatchNormalization.from_config(config)
        return layer.__class__.from_config(config)

    twin = keras.models.clone_model(net, clone_function=clone)
    twin.set_weights(net.get_weights())
    return twin


def _dataset(seed):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (4 * _BATCH, 16, 16, 3)).astype("float32")
    labels = rng.integers(0, 10, 4 * _BATCH).astype("int32")
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    return ds.batch(_BATCH, drop_remainder=True).repeat()


def trajectory(
    jit=False, loop_steps=_STEPS, concurrent_nets=False, keras_bn=False
):
    """Per-step losses of both nets and their final weights."""
    strategy = tf.distribute.get_strategy()
    nets = [_net(7 + i, keras_bn) for i in range(2)]
    opts = [optimizers.TorchSGD(0.02, momentum=0.9) for _ in nets]
    trainer = trainer_lib.Trainer(
        nets,
        opts,
        strategy,
        global_batch_size=_BATCH,
        jit=jit,
        concurrent_nets=concurrent_nets,
    )
    iterators = [iter(_dataset(i)) for i in range(2)]
    losses = []
    done = 0
    while done < _STEPS:
        n = min(loop_steps, _STEPS - done)
        stats = trainer.train_loop(iterators, n)
        losses.append([s["loss"] for s in stats])
        done += n
    weights = [
        np.concatenate([w.ravel() for w in n.get_weights()]) for n in nets
    ]
    return np.array(losses), weights


def _relative_error(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


class SpeedOptionsTest(tf.test.TestCase, parameterized.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.default = trajectory()
        cls.per_step = trajectory(loop_steps=1)

    def test_one_step_per_call_gives_the_same_trajectory(self):
        losses, weights = self.per_step
        # The default runs all steps in one call: its mean over the call
        # is the mean of the per-step losses.
        self.assertAllClose(losses.mean(axis=0), self.default[0][0], rtol=1e-5)
        for a, b in zip(weights, self.default[1]):
            self.assertAllClose(a, b, atol=1e-5)

    # XLA reorders float sums; a few steps of SGD amplify that to ~1e-4.
    @parameterized.named_parameters(
        ("xla", dict(jit=True), 1e-3),
        ("concurrent_nets", dict(concurrent_nets=True), 1e-5),
        ("keras_batch_norm", dict(keras_bn=True), 1e-4),
    )
    def test_option_matches_default(self, option, tolerance):
        losses, weights = trajectory(loop_steps=1, **option)
        reference_losses, reference_weights = self.per_step
        self.assertAllClose(losses, reference_losses, rtol=tolerance)
        for a, b in zip(weights, reference_weights):
            self.assertLess(_relative_error(a, b), tolerance)
        # The trajectory is not flat: the comparison can fail.
        self.assertGreater(np.abs(np.diff(losses[:, 0])).max(), 1e-3)

    @pytest.mark.large
    def test_onednn_kernels_match_eigen(self):
        # The oneDNN switch is read when TensorFlow loads: one child each.
        results = []
        for onednn in ("0", "1"):
            env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=onednn)
            env["PYTHONPATH"] = _ROOT
            out = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--child"],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=True,
            ).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
        eigen, onednn = results
        self.assertFalse(eigen["onednn"])
        self.assertTrue(onednn["onednn"])
        self.assertAllClose(eigen["losses"], onednn["losses"], rtol=1e-4)
        self.assertAllClose(eigen["weights"], onednn["weights"], atol=1e-4)
        self.assertAllClose(
            onednn["losses"], self.per_step[0].tolist(), rtol=1e-4
        )


def _child():
    from tensorflow.python.util import _pywrap_util_port

    losses, weights = trajectory(loop_steps=1)
    print(
        json.dumps(
            dict(
                onednn=bool(_pywrap_util_port.IsMklEnabled()),
                losses=losses.tolist(),
                weights=np.concatenate(weights)[::7].tolist(),
            )
        )
    )


if __name__ == "__main__":
    if "--child" in sys.argv:
        _child()
    else:
        tf.test.main()
