"""SavedModel export seconds and evaluation vs training img/s, one process.

Export: N nets of one architecture (as a grafting run's `net_<i>` and
`best`), built under the default MirroredStrategy as a job builds them,
exported once per round by each contender, in alternating order:

* `keras_archive`: `keras.export.ExportArchive` tracking the model, the
  endpoints traced per net (tfgraft's export before `Exporter`);
* `exporter`: `tfgraft.export.Exporter`, a fresh one per round (so its
  first net pays the trace every round).

Evaluation: a 2-net `Trainer` (the quick start's nets and batch sizes);
each round times `--train_steps` training steps and one `evaluate` over
`--eval_images` test images, after one warm-up of each. Both rates are
images per second that each net sees (the unit of history.json's
`train_images_per_sec`).

    python bench/export_eval.py --rounds=5

EKG teacher logits: `tfgraft.ekg.memory_bank.compute_knowledge` (a
training-mode BN forward of the gated supernet, one call per teacher) over
`--eval_images` images for 4 teachers, against a 1-net `Trainer` step of
the same network (`preset="ekg"`), interleaved.

Prints medians over rounds (and every round) as JSON.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfgraft import export as export_lib  # noqa: E402
from tfgraft.models import build_model  # noqa: E402
from tfgraft.training import optimizers  # noqa: E402
from tfgraft.training import trainer as trainer_lib  # noqa: E402


def keras_archive_export(model, path):
    """The export as it was: Keras's ExportArchive, traced per model."""
    shape = [None] + list(model.inputs[0].shape[1:])

    def logits(images):
        return tf.cast(model(images, training=False), tf.float32)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve",
        lambda images: logits(images),
        input_signature=[tf.TensorSpec(shape, tf.float32)],
    )
    archive.add_endpoint(
        "serve_uint8",
        lambda images: logits(tf.cast(images, tf.float32)),
        input_signature=[tf.TensorSpec(shape, tf.uint8)],
    )
    archive.write_out(path, verbose=False)


def bench_export(nets, rounds, root):
    times = {"keras_archive": [], "exporter": []}
    cpu = {"keras_archive": [], "exporter": []}
    for r in range(rounds):
        order = ["keras_archive", "exporter"]
        if r % 2:
            order.reverse()
        for name in order:
            exporter = export_lib.Exporter()
            per_net = []
            t_all, c0 = time.perf_counter(), time.process_time()
            for i, net in enumerate(nets):
                path = os.path.join(root, f"{name}_{r}_{i}")
                t0 = time.perf_counter()
                if name == "exporter":
                    exporter.export(net, path)
                else:
                    keras_archive_export(net, path)
                per_net.append(time.perf_counter() - t0)
            times[name].append(per_net)
            cpu[name].append(
                (time.process_time() - c0) / (time.perf_counter() - t_all)
            )
    return {
        name: {
            "first_net_s": statistics.median(t[0] for t in runs),
            "later_nets_s": statistics.median(x for t in runs for x in t[1:]),
            "all_nets_s": statistics.median(sum(t) for t in runs),
            "rounds": runs,
            "cpu_per_wall": cpu[name],
        }
        for name, runs in times.items()
    }


def _interleaved(rounds, runs):
    """Times each of `runs` (`name: fn -> images done`) once per round,
    in rotating order; returns images/s and CPU seconds per wall second
    (on a loaded machine a window that got less CPU shows it; 2.0 = both
    cores) per name, one entry per round."""
    names = list(runs)
    rates = {name: [] for name in names}
    cpu = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0, c0 = time.perf_counter(), time.process_time()
            done = runs[name]()
            dt = time.perf_counter() - t0
            rates[name].append(done / dt)
            cpu[name].append((time.process_time() - c0) / dt)
    return rates, cpu


def _train_iterators(strategy, rng, batch, num_nets):
    """One endless distributed iterator per net over 8 random batches."""
    images = rng.uniform(0, 255, (8 * batch, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, 10, 8 * batch).astype("int32")
    train = tf.data.Dataset.from_tensor_slices((images, labels))
    train = train.batch(batch, drop_remainder=True).repeat()
    return [
        iter(strategy.experimental_distribute_dataset(train))
        for _ in range(num_nets)
    ]


def bench_eval(strategy, rounds, train_steps, eval_images, width):
    batch, eval_batch = 64, 250
    rng = np.random.default_rng(0)
    with strategy.scope():
        nets = [
            build_model("resnet20", width_mult=width, model_name=f"net_{i}")
            for i in range(2)
        ]
        opts = [optimizers.TorchSGD(0.05, momentum=0.9) for _ in nets]
        trainer = trainer_lib.Trainer(
            nets, opts, strategy, global_batch_size=batch
        )
    iterators = _train_iterators(strategy, rng, batch, len(nets))
    labels = np.zeros([eval_images], "int32")
    test_images = rng.uniform(0, 255, (eval_images, 32, 32, 3))
    test = tf.data.Dataset.from_tensor_slices(
        (test_images.astype("float32"), labels)
    ).batch(eval_batch)
    trainer.train_loop(iterators, train_steps)  # warm-up (traces)
    trainer.evaluate(test)
    def run_train():
        trainer.train_loop(iterators, train_steps)
        return train_steps * batch

    def run_eval():
        trainer.evaluate(test)
        return eval_images

    rates, cpu = _interleaved(rounds, {"train": run_train, "eval": run_eval})
    train_med = statistics.median(rates["train"])
    eval_med = statistics.median(rates["eval"])
    return {
        "train_images_per_sec": train_med,
        "eval_images_per_sec": eval_med,
        "eval_over_train": eval_med / train_med,
        "train_rounds": rates["train"],
        "eval_rounds": rates["eval"],
        "train_cpu_per_wall": cpu["train"],
        "eval_cpu_per_wall": cpu["eval"],
    }


def bench_knowledge(strategy, rounds, train_steps, images, width):
    from tfgraft import models
    from tfgraft.ekg import gated as gated_lib
    from tfgraft.ekg import memory_bank as bank_lib

    batch, teachers = 64, 4
    rng = np.random.default_rng(0)
    plain = build_model("resnet20", width_mult=width, preset="ekg")
    slots = models.layer_slots("resnet20", preset="ekg")
    gated = gated_lib.GatedNetwork(plain, slots=slots)
    snapshots = [gated.state()] * teachers
    data = rng.uniform(0, 255, (images, 32, 32, 3)).astype("uint8")
    with strategy.scope():
        net = build_model("resnet20", width_mult=width, preset="ekg")
        trainer = trainer_lib.Trainer(
            [net],
            [optimizers.TorchSGD(0.05, momentum=0.9)],
            strategy,
            global_batch_size=batch,
        )
    iterators = _train_iterators(strategy, rng, batch, 1)
    trainer.train_loop(iterators, train_steps)  # warm-up (traces)
    bank_lib.compute_knowledge(gated, snapshots[:1], data[:256], 256)
    # Each compute_knowledge call traces its function once, as the EKG
    # job's one call does: included.
    def run_train():
        trainer.train_loop(iterators, train_steps)
        return train_steps * batch

    def run_knowledge():
        bank_lib.compute_knowledge(gated, snapshots, data, 256)
        return teachers * images

    rates, _ = _interleaved(
        rounds, {"train": run_train, "knowledge": run_knowledge}
    )
    train_med = statistics.median(rates["train"])
    know_med = statistics.median(rates["knowledge"])
    return {
        "train_images_per_sec": train_med,
        "teacher_images_per_sec": know_med,
        "teacher_over_train": know_med / train_med,
        "train_rounds": rates["train"],
        "teacher_rounds": rates["knowledge"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--nets", type=int, default=3)
    parser.add_argument("--width_mult", type=float, default=0.5)
    parser.add_argument("--train_steps", type=int, default=20)
    parser.add_argument("--eval_images", type=int, default=1000)
    parser.add_argument(
        "--only",
        choices=["export", "eval", "knowledge"],
        default=None,
        help="Run one part only.",
    )
    args = parser.parse_args()
    strategy = tf.distribute.MirroredStrategy()
    out = {"load_average_start": os.getloadavg()}
    if args.only in (None, "export"):
        with strategy.scope():
            nets = [
                build_model(
                    "resnet20", width_mult=args.width_mult, model_name=f"n{i}"
                )
                for i in range(args.nets)
            ]
        with tempfile.TemporaryDirectory() as root:
            out["export"] = bench_export(nets, args.rounds, root)
    if args.only in (None, "eval"):
        out["eval"] = bench_eval(
            strategy,
            args.rounds,
            args.train_steps,
            args.eval_images,
            args.width_mult,
        )
    if args.only in (None, "knowledge"):
        out["knowledge"] = bench_knowledge(
            strategy,
            args.rounds,
            args.train_steps,
            args.eval_images * 3,
            args.width_mult,
        )
    out["load_average_end"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
