"""EKG: Ensemble Knowledge Guided sub-network search and fine-tuning.

Lee & Song, ECCV 2022 (METHODS.md §3). Modules: `gated` (the gated
supernet), `search`, `memory_bank`, `distill` (the knowledge curriculum),
`extract` (the compact network), `data`, `trainer` (`KnowledgeTrainer`)
and `job` (`EKG`, all phases); `subnet` (`search_subnet`) and `fit`
(`KnowledgeModel`, `knowledge_dataset`) run phases 2-4 and the knowledge
fine-tuning on your own functional model.

Where tfgraft differs from the reference code (METHODS.md §3):

* knowledge fine-tuning is on by default (`--knowledge=false`: the shipped
  pipeline's plain CE); `--search_knowledge=false` (an ablation the
  reference lacks) scores the search with the validation CE alone; a
  teacher is selected when `d_t <= d_s` (the code writes `<`; they differ
  on ties only, within 1e-6 per image), so a student equal to its teachers
  gets exactly CE; with several replicas the selection uses each replica's
  share of the batch;
* the two views run through the net as one batch of 2B images;
* `select_teachers` uses exactly T evenly spaced targets (the reference's
  float `arange` can give 6) and repeats entries when the history is
  shorter than T;
* `--cost_mode=as_coded` (default) reproduces `mask_marking`'s slicing
  bug, `intended` sums the scores the next step removes; the trimmed Otsu
  threshold ignores exhausted gates (width <= 0); a candidate whose step
  would not remove a channel is skipped, and an unreachable target is a
  one-line error;
* the warm-up pass divides the summed CE by `batch / 2` (the reference's
  128 for batches of 256); `train_sub` stops short of a class's `val`
  images when the class is too small for both (the reference overlaps);
* models standardise with the dataset's statistics (`DatasetInfo`), not the
  reference's BGR-ordered CIFAR constants; the fine-tuning optimizer is
  `TorchSGD` (PyTorch-form Nesterov, coupled weight decay), identical to
  TF's Nesterov SGD at a constant LR;
* accuracies are measured with inference-mode BN; the extracted net is not
  run on the test set in training mode before saving (the reference's
  `pruning.py` lets BN absorb test statistics).
"""

from tfgraft.ekg.errors import EKGError
from tfgraft.ekg.fit import KnowledgeModel
from tfgraft.ekg.fit import knowledge_dataset
from tfgraft.ekg.subnet import SubnetResult
from tfgraft.ekg.subnet import search_subnet

__all__ = [
    "EKGError",
    "KnowledgeModel",
    "SubnetResult",
    "knowledge_dataset",
    "search_subnet",
]
