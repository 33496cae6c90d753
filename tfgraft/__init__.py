"""tfgraft: Filter Grafting, stripe-wise pruning, EKG and LW-DNA for Keras 3.

Submodules are imported on demand (`import tfgraft.grafting`, ...); this file
stays light so that `import tfgraft` does not build a TensorFlow graph.
"""

import os as _os
import sys as _sys

# TensorFlow turns its oneDNN kernels on by default only on some Intel CPUs;
# elsewhere (AMD EPYC, for one) convolutions and their gradients run on
# Eigen, about 1.7x slower for a CIFAR ResNet step (bench/throughput.py).
# tfgraft turns them on where the CPU has AVX-512, and only there: oneDNN's
# AVX2 kernel for the filter gradient of a 1x1 stride-2 convolution with 3,
# 4 or 6 input channels (a narrow ResNet's projection shortcut) returns a
# wrong gradient in a third to all of its calls, and can corrupt the heap
# (bench/onednn_conv_grad_check.py; README, Performance). The switch is read
# when TensorFlow loads, so it can only be set here when tfgraft is imported
# first; an explicit TF_ENABLE_ONEDNN_OPTS wins (with a warning on an
# AVX2-only CPU).


def _onednn_default(environ, flags):
    """The `TF_ENABLE_ONEDNN_OPTS` value tfgraft sets, or None to leave it.

    Args:
        environ: the process environment.
        flags: the CPU's feature flags (`tfgraft.cpu.flags()`).

    Returns:
        `"1"` on an x86 CPU with AVX-512 when the variable is unset, else None.
    """
    if "TF_ENABLE_ONEDNN_OPTS" in environ or "avx512f" not in flags:
        return None
    return "1"


def _onednn_warning(environ, flags):
    """A one-line warning when oneDNN is forced on an AVX2-only x86 CPU."""
    if environ.get("TF_ENABLE_ONEDNN_OPTS") != "1":
        return None
    if "avx2" not in flags or "avx512f" in flags:
        return None
    return (
        "TF_ENABLE_ONEDNN_OPTS=1 on a CPU without AVX-512: oneDNN's AVX2 "
        "filter gradient of 1x1 stride-2 convolutions with 3, 4 or 6 input "
        "channels is wrong in many calls (tfgraft "
        "bench/onednn_conv_grad_check.py); unset it to train on Eigen."
    )


def _configure_onednn():
    """Sets `TF_ENABLE_ONEDNN_OPTS` before TensorFlow loads (see above)."""
    from tfgraft import cpu

    flags = cpu.flags()
    value = _onednn_default(_os.environ, flags)
    if value is not None:
        _os.environ["TF_ENABLE_ONEDNN_OPTS"] = value
    message = _onednn_warning(_os.environ, flags)
    if message is not None:
        import warnings

        warnings.warn(message, RuntimeWarning, stacklevel=3)


if "tensorflow" not in _sys.modules:
    _configure_onednn()

__version__ = "0.1.0"
