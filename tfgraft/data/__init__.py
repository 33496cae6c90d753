"""Data sources and input pipelines (raw 0-255 pixels, stateless augment).

`load_source("synthetic" | "tfds:<name>" | "folder:<path>")` opens a data
set; `train_dataset` and `eval_dataset` turn it into batches.
"""

from tfgraft.data.pipeline import eval_dataset
from tfgraft.data.pipeline import steps_per_epoch
from tfgraft.data.pipeline import train_dataset
from tfgraft.data.sources import DataError
from tfgraft.data.sources import DatasetInfo
from tfgraft.data.sources import Source
from tfgraft.data.sources import load_source
from tfgraft.data.sources import source_for

__all__ = [
    "DataError",
    "DatasetInfo",
    "Source",
    "eval_dataset",
    "load_source",
    "source_for",
    "steps_per_epoch",
    "train_dataset",
]
