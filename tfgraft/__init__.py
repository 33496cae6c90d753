"""tfgraft: Filter Grafting, stripe-wise pruning, EKG and LW-DNA for Keras 3.

Submodules are imported on demand (`import tfgraft.grafting`, ...); this file
stays light so that `import tfgraft` does not build a TensorFlow graph.
"""

__version__ = "0.1.0"
