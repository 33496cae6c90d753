"""LW-DNA vs the uniform ResNet-20 at equal FLOPs on the CIFAR-10 subset.

Usage (from the repo root):

    python bench/lwdna_cifar_small.py [--seeds=3] [--epochs=4] \
        [--base_width=0.5] [--width_mult=2] [--init=reinit]

For every seed, one `LWDNAJob` widens ResNet-20 (scaled by `--base_width`)
by `--width_mult`, runs the two-step hypernetwork search, derives the
per-layer widths at `ratio = FLOPs(original) / FLOPs(widened)` (DHP
counter, so the derived net costs what the original costs), and trains the
derived net and the uniform original with the same recipe, epochs and
seed (same data order). Prints each seed's final and best test top-1 of
both nets and their mean, standard deviation and range over seeds.

Data: `../shared/data/cifar10-small` (5,000 train / 1,000 test images).
Defaults fit in about 10 minutes on an idle 2-core machine; full-width
(`--base_width=1`), longer (`--epochs=30`) runs need a GPU or patience.
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import logging  # noqa: E402

from tfgraft import complexity  # noqa: E402
from tfgraft import config as cfg  # noqa: E402
from tfgraft import io  # noqa: E402
from tfgraft import models  # noqa: E402
from tfgraft.lwdna import job as lwdna_job  # noqa: E402

CIFAR10_SMALL = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "..",
    "shared",
    "data",
    "cifar10-small",
)


def equal_flops_ratio(model, base, width_mult, preset):
    """FLOPs(original) / FLOPs(widened), both by the DHP counter."""

    def flops(config):
        net = models.build_model(model, channel_config=config, preset=preset)
        return complexity.count(net, "dhp").flops

    return flops(base) / flops(base.scaled(width_mult))


def spread(values):
    mean = statistics.mean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    low, high = min(values) * 100, max(values) * 100
    return f"{mean * 100:6.2f} ± {std * 100:4.2f} [{low:5.2f}, {high:5.2f}]"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--base_width", type=float, default=0.5)
    parser.add_argument("--width_mult", type=float, default=2.0)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=0.1)
    parser.add_argument("--init", default="reinit")
    parser.add_argument("--importance", default="grad")
    parser.add_argument("--strategy", default="default")
    parser.add_argument("--data", default=CIFAR10_SMALL)
    parser.add_argument("--workdir", default="/tmp/lwdna_cifar_small")
    args = parser.parse_args()
    logging.set_verbosity(logging.WARNING)

    model, preset = "resnet20", "dhp"
    base = models.default_channel_config(model).scaled(args.base_width)
    ratio = equal_flops_ratio(model, base, args.width_mult, preset)
    print(
        f"ResNet-20 x{args.base_width} (uniform) vs LW-DNA from x"
        f"{args.width_mult} at ratio {ratio:.4f} of the widened FLOPs; "
        f"{args.epochs} epochs, batch {args.batch_size}, cosine lr "
        f"{args.learning_rate}, init={args.init}, "
        f"importance={args.importance}, data {os.path.normpath(args.data)}"
    )
    os.makedirs(args.workdir, exist_ok=True)
    base_path = os.path.join(args.workdir, "base_channel_config.json")
    base.save(base_path)
    rows = []
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        workdir = os.path.join(args.workdir, f"seed{seed}")
        config = cfg.JobConfig(
            data=cfg.DataConfig(
                dataset=f"folder:{os.path.abspath(args.data)}",
                batch_size=args.batch_size,
                eval_batch_size=500,
            ),
            model=cfg.ModelConfig(
                name=model,
                width_mult=args.width_mult,
                channel_config=base_path,
                preset=preset,
            ),
            optim=cfg.OptimConfig(
                learning_rate=args.learning_rate,
                weight_decay=5e-4,
                schedule="cosine",
            ),
            run=cfg.RunConfig(
                epochs=args.epochs,
                seed=seed,
                strategy=args.strategy,
                progress=False,
                checkpoint_every=args.epochs,
            ),
            lwdna=cfg.LWDNAConfig(
                ratio=min(ratio, 1.0),
                importance=args.importance,
                grad_normalize=args.importance == "grad",
                init=args.init,
                train_uniform=True,
            ),
        )
        report = lwdna_job.LWDNAJob(config, workdir).run()
        c = report["complexity"]
        row = {
            "seed": seed,
            "uniform_final": report["uniform"]["final_top1"],
            "uniform_best": report["uniform"]["best_top1"],
            "lwdna_final": report["derived"]["final_top1"],
            "lwdna_best": report["derived"]["best_top1"],
            "flops_vs_uniform": c["derived"]["ratio_to_original"],
            "uniform_params": c["original"]["params"],
            "lwdna_params": c["derived"]["params"],
        }
        rows.append(row)
        print(
            f"seed {seed}: uniform {row['uniform_final'] * 100:5.2f} "
            f"(best {row['uniform_best'] * 100:5.2f}) | LW-DNA "
            f"{row['lwdna_final'] * 100:5.2f} (best "
            f"{row['lwdna_best'] * 100:5.2f}) | LW-DNA FLOPs "
            f"{row['flops_vs_uniform']:.3f}x, params "
            f"{row['lwdna_params']}/{row['uniform_params']} | "
            f"{time.perf_counter() - t0:.0f} s",
            flush=True,
        )
    print("top-1 %: mean ± std [min, max] over seeds")
    for key, label in (
        ("uniform_final", "uniform final"),
        ("lwdna_final", "LW-DNA  final"),
        ("uniform_best", "uniform best "),
        ("lwdna_best", "LW-DNA  best "),
    ):
        print(f"  {label}: {spread([r[key] for r in rows])}")
    diffs = [r["lwdna_final"] - r["uniform_final"] for r in rows]
    print(f"  LW-DNA - uniform (final): {spread(diffs)}")
    print(f"total {time.perf_counter() - t0:.0f} s")
    io.atomic_write_json(
        os.path.join(args.workdir, "results.json"),
        {"args": vars(args), "ratio": ratio, "rows": rows},
    )


if __name__ == "__main__":
    main()
