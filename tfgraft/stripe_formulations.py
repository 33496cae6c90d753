"""The `CompactStripeConv2D` formulations, importable without TensorFlow.

`tfgraft.layers.stripe_conv` accepts exactly these; `tfgraft.config`
offers them (and `"calibrate"`) as the stripe job's choices and must not
import TensorFlow.
"""

FORMULATIONS = (
    "auto",
    "dense",
    "shift_add",
    "shift_add_matmul",
    "im2col",
    "shift_add_segment",
)
