"""TensorBoard scalars without the tensorboard package.

TF 2.21 no longer installs TensorBoard, and `tf.summary.scalar` lives in
it. A scalar summary is only a float tensor tagged with the "scalars"
plugin's metadata, which core `tf.summary.write` can emit, so event files
stay readable by any TensorBoard.
"""

import tensorflow as tf
from tensorflow.core.framework import summary_pb2

_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
)


def scalar(name, value, step=None):
    """Writes one scalar to the default summary writer."""
    return tf.summary.write(
        name,
        tf.constant(value, tf.float32),
        step=step,
        metadata=_SCALAR_METADATA,
    )
