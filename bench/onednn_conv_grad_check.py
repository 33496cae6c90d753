"""Repeats conv kernel gradients in a graph and counts the wrong ones.

A standalone reproduction (TensorFlow only, no tfgraft) of the wrong LW-DNA
latent gradient once blamed on two inter-op threads (issue #16; README,
Performance: "oneDNN only on AVX-512 CPUs"). The fault is oneDNN's AVX2
kernel for the filter gradient of a *1x1 stride-2* convolution, the
projection shortcut of every ResNet: `Conv2DBackpropFilter` run again and
again in a `tf.function` returns a different, wrong kernel gradient in a
large share of the calls (relative error up to ~0.8), with one inter-op
thread as with two, and with one intra-op thread the process dies with
"double free or corruption". The AVX-512 kernels of the same op, and
TensorFlow's own (Eigen) kernels with oneDNN off, are exact in every call.

Each case compares every call's float32 result with the float64 gradient
(Eigen; oneDNN has no float64 kernels) and counts calls further than
`--tolerance` (relative Frobenius error); float rounding gives ~3e-7.

    # This CPU's best ISA (AVX-512 here): all cases exact.
    TF_ENABLE_ONEDNN_OPTS=1 python bench/onednn_conv_grad_check.py
    # The AVX2 kernels, as on an AVX2-only CPU: the stride-2 1x1 cases fail.
    ONEDNN_MAX_CPU_ISA=AVX2 TF_ENABLE_ONEDNN_OPTS=1 \
        python bench/onednn_conv_grad_check.py

Set the variables on the command line: TensorFlow and oneDNN read them
when they load. Exits 1 when any case had a wrong call.
"""

import os
import sys

import numpy as np
import tensorflow as tf

# (batch, size, in, out, kernel, stride, padding): CIFAR ResNet shapes.
CASES = (
    (16, 32, 4, 8, 1, 2, "VALID"),
    (16, 32, 4, 8, 1, 2, "SAME"),
    (16, 32, 4, 8, 1, 1, "VALID"),
    (16, 32, 4, 8, 3, 2, "VALID"),
    (128, 32, 16, 32, 1, 2, "VALID"),
    (128, 16, 32, 64, 1, 2, "VALID"),
    (128, 32, 16, 32, 3, 2, "SAME"),
    (128, 32, 16, 16, 3, 1, "SAME"),
)


def check(batch, size, c_in, c_out, kernel, stride, padding, calls, tolerance):
    """Wrong calls of `calls` and the worst relative error of one case."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, size, size, c_in)).astype(np.float32)
    out = -(-size // stride) if padding == "SAME" else (size - kernel) // stride + 1
    dy = rng.standard_normal((batch, out, out, c_out)).astype(np.float32)
    shape = (kernel, kernel, c_in, c_out)
    strides = (1, stride, stride, 1)

    def grad(x, dy):
        return tf.raw_ops.Conv2DBackpropFilter(
            input=x, filter_sizes=shape, out_backprop=dy,
            strides=strides, padding=padding,
        )

    exact = grad(x.astype(np.float64), dy.astype(np.float64)).numpy()
    graph = tf.function(grad)
    x, dy = tf.constant(x), tf.constant(dy)
    wrong, worst = 0, 0.0
    for _ in range(calls):
        g = graph(x, dy).numpy()
        error = np.linalg.norm(g - exact) / np.linalg.norm(exact)
        worst = max(worst, float(error))
        wrong += error > tolerance
    return wrong, worst


def main(argv):
    calls = int(argv[1]) if len(argv) > 1 else 200
    tolerance = 1e-4
    env = {
        k: os.environ.get(k, "unset")
        for k in (
            "TF_ENABLE_ONEDNN_OPTS",
            "ONEDNN_MAX_CPU_ISA",
            "TF_NUM_INTEROP_THREADS",
            "TF_NUM_INTRAOP_THREADS",
        )
    }
    print(" ".join(f"{k}={v}" for k, v in env.items()), f"tf={tf.__version__}")
    failed = 0
    for case in CASES:
        wrong, worst = check(*case, calls=calls, tolerance=tolerance)
        failed += wrong > 0
        batch, size, c_in, c_out, kernel, stride, padding = case
        print(
            f"{kernel}x{kernel} stride {stride} {padding:5s} "
            f"{batch}x{size}x{size}x{c_in}->{c_out}: "
            f"{wrong}/{calls} calls wrong, worst relative error {worst:.1e}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
