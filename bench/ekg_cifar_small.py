"""EKG on the cifar10-small subset: with and without knowledge, side by side.

Usage (from the repo root):

    python bench/ekg_cifar_small.py [--workdir=/tmp/ekg_bench]
        [--width_mult=0.5] [--pretrain_epochs=2] [--epochs=2]
        [--target_flops_rate=0.55] [--search_val_per_class=16]
        [--dataset=folder:<path>] [--fresh]

Pretrains ResNet-20 (EKG preset) on the 5,000-image CIFAR-10 subset
(`../shared/data/cifar10-small`), searches one sub-network down to
`--target_flops_rate` of the FLOPs (EKG counter), then fine-tunes that same
extracted sub-network twice: with the knowledge curriculum (two views,
T = 4, 5 teachers) and with plain cross-entropy (`--knowledge=false`, the
reference's shipped pipeline). The second run reuses the first one's
pretraining and search (its `search/` folder), so the two fine-tunings
start from identical weights. Prints accuracies, FLOPs and params side by
side and writes `<workdir>/summary.json`.

The defaults are a reduced setting (half-width ResNet-20, 2 + 2 epochs,
64 train_sub and 16 val images per class, pretraining LR 0.1) that fits
about 10 minutes on 2 busy CPU cores; it shows the pipeline, not the
paper's numbers (those need configs/ekg_cifar10_resnet56.cfg on a GPU).
"""

import argparse
import json
import os
import shutil
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tfgraft import config as cfg  # noqa: E402
from tfgraft.ekg import job as job_lib  # noqa: E402
from tfgraft.training import distribute  # noqa: E402

CIFAR10_SMALL = os.path.join(os.path.dirname(ROOT), "shared", "data")
CIFAR10_SMALL = os.path.join(CIFAR10_SMALL, "cifar10-small")


def _config(args, **ekg):
    epochs = args.epochs
    return cfg.JobConfig(
        data=cfg.DataConfig(
            dataset=args.dataset,
            batch_size=args.batch_size,
            eval_batch_size=500,
        ),
        model=cfg.ModelConfig(
            "resnet20", width_mult=args.width_mult, preset="ekg"
        ),
        # The reference's fine-tuning recipe, shortened: LR 0.01 x0.2 at
        # 30/60/80% of the epochs, Nesterov, coupled wd 5e-4.
        optim=cfg.OptimConfig(
            learning_rate=0.01,
            momentum=0.9,
            nesterov=True,
            weight_decay=5e-4,
            schedule="multistep",
            milestones=(0.3 * epochs, 0.6 * epochs, 0.8 * epochs),
            gamma=0.2,
        ),
        run=cfg.RunConfig(epochs=epochs, seed=1, progress=False),
        ekg=cfg.EKGConfig(
            target_flops_rate=args.target_flops_rate,
            pretrain_learning_rate=args.pretrain_learning_rate,
            train_per_class=args.search_train_per_class,
            val_per_class=args.search_val_per_class,
            **ekg,
        ),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/ekg_bench")
    parser.add_argument("--dataset", default=f"folder:{CIFAR10_SMALL}")
    parser.add_argument("--width_mult", type=float, default=0.5)
    parser.add_argument("--pretrain_epochs", type=int, default=2)
    parser.add_argument("--pretrain_learning_rate", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--target_flops_rate", type=float, default=0.55)
    parser.add_argument("--search_train_per_class", type=int, default=64)
    parser.add_argument("--search_val_per_class", type=int, default=16)
    parser.add_argument("--fresh", action="store_true", help="rm workdir")
    args = parser.parse_args()
    if args.fresh:
        shutil.rmtree(args.workdir, ignore_errors=True)
    strategy = distribute.make_strategy("mirrored")
    kd_dir = os.path.join(args.workdir, "knowledge")
    ce_dir = os.path.join(args.workdir, "plain")

    t0 = time.perf_counter()
    kd = job_lib.EKGJob(
        _config(args, pretrain_epochs=args.pretrain_epochs, knowledge=True),
        kd_dir,
        strategy=strategy,
    ).run()
    t_kd = time.perf_counter() - t0
    # Same pretrained net and search: start from the first run's search/.
    os.makedirs(ce_dir, exist_ok=True)
    if not os.path.exists(os.path.join(ce_dir, "search")):
        shutil.copytree(
            os.path.join(kd_dir, "search"), os.path.join(ce_dir, "search")
        )
    t0 = time.perf_counter()
    ce = job_lib.EKGJob(
        _config(
            args,
            pretrained=os.path.join(kd_dir, "pretrain"),
            knowledge=False,
        ),
        ce_dir,
        strategy=strategy,
    ).run()
    t_ce = time.perf_counter() - t0

    e = kd["ekg"]
    rows = [
        ("top-1 pretrained (full net)", e["accuracy"]["pretrained"], None),
        ("top-1 searched, before fine-tuning", e["accuracy"]["searched"], None),
        (
            "top-1 fine-tuned, last epoch",
            e["accuracy"]["finetuned_final"],
            ce["ekg"]["accuracy"]["finetuned_final"],
        ),
        (
            "top-1 fine-tuned, best epoch",
            e["accuracy"]["finetuned_best"],
            ce["ekg"]["accuracy"]["finetuned_best"],
        ),
    ]
    print()
    print(
        f"EKG on {args.dataset.split('/')[-1]}: resnet20 x{args.width_mult}, "
        f"pretrain {args.pretrain_epochs} ep, fine-tune {args.epochs} ep, "
        f"target FLOPs rate {args.target_flops_rate}"
    )
    print(f"{'':<38}{'knowledge':>12}{'plain CE':>12}")
    for name, a, b in rows:
        b_text = f"{b:>12.4f}" if b is not None else f"{'(same)':>12}"
        print(f"{name:<38}{a:>12.4f}{b_text}")
    for conv in ("ekg", "macs"):
        f, p = e["flops"][conv], e["params"][conv]
        print(
            f"{'FLOPs ' + conv + ' before -> after':<38}"
            f"{f['before']:>12,}{f['after']:>12,}  "
            f"(rate {f['after'] / f['before']:.3f})"
        )
        print(
            f"{'params ' + conv + ' before -> after':<38}"
            f"{p['before']:>12,}{p['after']:>12,}"
        )
    print(
        f"{'search steps / teachers':<38}{e['steps']:>12}"
        f"{str(e['teachers']):>24}"
    )
    print(
        f"{'seconds (search, bank, job total)':<38}"
        f"{e['search_seconds']:>12.0f}{e['bank_seconds']:>12.0f}"
        f"{t_kd:>8.0f} | plain job {t_ce:.0f}"
    )
    summary = {
        "settings": vars(args),
        "knowledge": kd,
        "plain": ce,
        "seconds": {"knowledge_job": t_kd, "plain_job": t_ce},
    }
    with open(os.path.join(args.workdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
