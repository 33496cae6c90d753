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
# With oneDNN on, ops also run one at a time (TF_NUM_INTEROP_THREADS=1,
# each op still uses every core), a precaution: twice in 7 runs with two
# inter-op threads the LW-DNA search's latent gradient came out unrelated
# to the true one on a 2-core AMD CPU; 71 later runs did not reproduce it
# and the cause is unknown (README, Performance; a detector in
# bench/interop_gradient_check.py). One net's step is as fast.
if "tensorflow" not in _sys.modules:
    _os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    if _os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1":
        _os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

__version__ = "0.1.0"
