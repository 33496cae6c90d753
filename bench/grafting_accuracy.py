"""Does grafting help? 2-net grafting vs 2 independent nets vs their ensemble.

On the real CIFAR-10 subset (`../shared/data/cifar10-small`), ResNet-20, a
fixed epoch budget, for several seeds. The independent pair is the same
two-net run with grafting switched off: same initialisations, data streams,
learning rates and schedule, so the only difference is the graft step.
Prints mean and spread (sample std) of best and final top-1 of:

* grafting: each net (mean over both nets) and the best net;
* independent: each net and the best net;
* ensemble of the independent pair (softmax average).

    python bench/grafting_accuracy.py [--epochs=30] [--seeds=0,1,2]
"""

import json
import os
import statistics
import tempfile

from absl import app
from absl import flags
from absl import logging

from tfgraft import config as cfg
from tfgraft.grafting import job as graft_job

_DATA = flags.DEFINE_string(
    "dataset",
    "folder:../shared/data/cifar10-small",
    "Dataset spec (default: the 5,000-image CIFAR-10 subset).",
)
_MODEL = flags.DEFINE_string("model", "resnet20", "Zoo model.")
_EPOCHS = flags.DEFINE_integer("epochs", 30, "Epoch budget per run.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Batch size per net.")
_LR = flags.DEFINE_float("learning_rate", 0.1, "Initial LR.")
_DLR = flags.DEFINE_bool("difflr", True, "Different initial LRs (dlr).")
_OUT = flags.DEFINE_string("json", None, "Write results here.")


class IndependentJob(graft_job.GraftingJob):
    """The same N-net run with the graft step switched off."""

    name = "independent"

    def hooks(self, trainer):
        return []

    def report_extras(self, trainer, history):
        return {}


def _config(seed):
    return cfg.JobConfig(
        data=cfg.DataConfig(
            dataset=_DATA.value, batch_size=_BATCH.value, eval_batch_size=200
        ),
        model=cfg.ModelConfig(name=_MODEL.value),
        optim=cfg.OptimConfig(
            learning_rate=_LR.value, weight_decay=5e-4, schedule="cosine"
        ),
        run=cfg.RunConfig(epochs=_EPOCHS.value, seed=seed, progress=False),
        graft=cfg.GraftConfig(num_nets=2, difflr=_DLR.value),
    )


def _summary(report):
    nets = report["nets"]
    return {
        "net_best": [n["best_top1"] for n in nets],
        "net_final": [n["final_top1"] for n in nets],
        "ensemble_best": report["ensemble"]["best_top1"],
        "ensemble_final": report["ensemble"]["final_top1"],
    }


def _stats(values):
    mean = statistics.mean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:6.2f} +- {100 * std:4.2f}"


def main(argv):
    del argv
    results = {"grafting": [], "independent": []}
    root = tempfile.mkdtemp(prefix="grafting_accuracy_")
    for seed in map(int, _SEEDS.value):
        for name, cls in (
            ("grafting", graft_job.GraftingJob),
            ("independent", IndependentJob),
        ):
            workdir = os.path.join(root, f"{name}_{seed}")
            logging.info("Running %s seed %d in %s", name, seed, workdir)
            report = cls(_config(seed), workdir).run()
            results[name].append(_summary(report))
    rows = []
    for name in ("grafting", "independent"):
        runs = results[name]
        for kind in ("best", "final"):
            per_net = [x for r in runs for x in r[f"net_{kind}"]]
            top_net = [max(r[f"net_{kind}"]) for r in runs]
            rows.append((f"{name} nets ({kind})", _stats(per_net)))
            rows.append((f"{name} best net ({kind})", _stats(top_net)))
    for kind in ("best", "final"):
        ens = [r[f"ensemble_{kind}"] for r in results["independent"]]
        rows.append((f"independent ensemble ({kind})", _stats(ens)))
    print(
        f"{_MODEL.value}, {_DATA.value}, {_EPOCHS.value} epochs, seeds "
        f"{','.join(_SEEDS.value)} (top-1 %, mean +- std)"
    )
    for label, value in rows:
        print(f"{label:<34} {value}")
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    app.run(main)
