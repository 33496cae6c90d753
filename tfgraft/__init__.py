"""tfgraft: Filter Grafting, stripe-wise pruning, EKG and LW-DNA for Keras 3.

Submodules are imported on demand (`import tfgraft.grafting`, ...); this file
stays light so that `import tfgraft` does not build a TensorFlow graph.
"""

import os as _os
import sys as _sys

# TensorFlow turns its oneDNN kernels on by default only on some Intel CPUs;
# elsewhere (AMD EPYC, for one) convolutions and their gradients run on
# Eigen, about 1.7x slower for a CIFAR ResNet step (bench/throughput.py).
# The switch is read when TensorFlow loads, so it can only be set here when
# tfgraft is imported first; an explicit TF_ENABLE_ONEDNN_OPTS wins.
if "tensorflow" not in _sys.modules:
    _os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"
