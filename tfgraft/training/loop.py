"""The outer loop: epochs, inner step loops, eval, hooks, checkpoints, logs.

`fit` owns everything around the trainer's steps (Orbit's Controller split):
it splits each epoch into inner loops of `steps_per_loop` steps (one
`tf.function` call each, one host sync each), breaks loops where a hook asks
for a step interval, evaluates every `eval_every` epochs and at the end,
runs the epoch hooks (grafting), saves a checkpoint, writes TensorBoard
summaries and keeps a per-epoch history. What a person sees is the
`console.Console`'s; the Orbit-style per-loop and per-eval lines are
`logging.debug` (`--verbosity=1`).

The history is stored *inside* the checkpoint (a string variable), so a
crash can never leave history and weights out of step. The data iterators
need no state: the training stream is a pure function of (seed, step), so
`make_iterators(step)` resumes it exactly (README, "Resuming after a
crash"; tests/e2e/crash_resume_test.py).

Numerical faults: each inner loop reports the steps whose loss or
gradients were not finite; under `on_nan="stop"` the loop raises
`NonFiniteError` before anything of that state is saved.
"""

import json
import math
import os
import time

import tensorflow as tf
from absl import logging

from tfgraft import io
from tfgraft import points
from tfgraft.training import console as console_lib
from tfgraft.training import distribute
from tfgraft.training import summaries


class Hook:
    """Something the loop calls at step intervals and epoch ends.

    `every_steps > 0` makes the loop stop an inner loop at each multiple of
    it and call `on_steps(step)`. `on_epoch_end(epoch, logs)` runs after
    the epoch's evaluation and before its checkpoint; it may add entries to
    `logs` (they go into the history and summaries).
    `checkpoint_items()` adds trackables to the run's checkpoint.
    """

    every_steps = 0

    def on_steps(self, step):
        del step

    def on_epoch_end(self, epoch, logs, last):
        del epoch, logs, last

    def checkpoint_items(self):
        return {}

    def describe(self, logs):
        """A short fragment for the epoch's console line ("" for none)."""
        del logs
        return ""


class CheckpointError(RuntimeError):
    """A checkpoint could not be read; the message names it."""


class NonFiniteError(RuntimeError):
    """A net's loss or gradient became NaN/Inf; names net, step and LR."""


# What reading a truncated or corrupt checkpoint raises (a truncated data
# file surfaces as IndexError from the C++ reader).
_UNREADABLE = (tf.errors.OpError, AssertionError, ValueError, IndexError)


def restore(checkpoint, manager):
    """Restores the newest readable checkpoint; returns its path or None.

    A corrupt or truncated newest checkpoint is reported and the previous
    one is tried, so one bad write never loses the whole run.
    """
    errors = []
    for path in reversed(manager.checkpoints):
        try:
            checkpoint.restore(path).assert_existing_objects_matched()
            return path
        except _UNREADABLE as e:
            first = io.first_line(e)
            logging.warning(
                "Checkpoint %s is unreadable (%s); trying an older one",
                path,
                first,
            )
            errors.append(f"{path}: {first}")
    if errors:
        raise CheckpointError("no readable checkpoint: " + "; ".join(errors))
    return None


def _save(manager, step, options):
    """`manager.save`; a failed write (full disk) removes the partial files
    and raises `io.WriteError` naming the checkpoint, the index unchanged."""
    try:
        manager.save(checkpoint_number=step, options=options)
    except (OSError, tf.errors.OpError) as e:
        prefix = os.path.join(manager.directory, f"ckpt-{int(step)}")
        for path in tf.io.gfile.glob(prefix + "[._]*"):
            if tf.io.gfile.isdir(path):
                tf.io.gfile.rmtree(path)
            else:
                tf.io.gfile.remove(path)
        raise io.write_error(prefix, e) from None


def fit(
    trainer,
    *,
    make_iterators,
    eval_dataset,
    run,
    steps_per_epoch,
    workdir,
    hooks=(),
    is_chief=True,
    examples_per_step=0,
    console=None,
):
    """Trains `trainer` for `run.epochs`, resuming from `workdir`.

    Args:
        trainer: a `tfgraft.training.trainer.Trainer`.
        make_iterators: `f(start_step) -> list of distributed iterators`,
            one per net, positioned at global step `start_step` (exactly).
        eval_dataset: a finite `tf.data.Dataset` for per-epoch evaluation.
        run: the `tfgraft.config.RunConfig`: epochs, max steps, steps per
            loop, checkpoint and evaluation cadences, progress bar.
        steps_per_epoch: training steps per epoch.
        workdir: run folder (`checkpoints/`, `summaries/` are written here).
        hooks: `Hook`s, called in order.
        is_chief: whether this worker writes checkpoints and summaries.
        examples_per_step: images per step (for the images/sec figure).
        console: the `console.Console` that shows the epochs (default: one
            on stderr, shown by the chief only, live bars per
            `run.progress`).

    Returns:
        The list of per-epoch log dicts (the full history, restored part
        included).
    """
    strategy = trainer.strategy
    if console is None:
        console = console_lib.Console(enabled=is_chief, live=run.progress)
    history_var = tf.Variable("[]", dtype=tf.string, trainable=False)
    items = {**trainer.checkpoint_items(), "history": history_var}
    for hook in hooks:
        items.update(hook.checkpoint_items())
    checkpoint = tf.train.Checkpoint(**items)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    save_dir = ckpt_dir
    if not is_chief:
        # Every worker must call save (MultiWorkerMirroredStrategy), but
        # only the chief's checkpoints are kept: the others save into a
        # private scratch folder and resume from the chief's checkpoints.
        save_dir = distribute.worker_scratch_dir(strategy)
    manager = tf.train.CheckpointManager(
        checkpoint,
        save_dir,
        max_to_keep=run.keep_checkpoints,
        step_counter=trainer.global_step,
    )
    # Runs between the checkpoint's files and the manager's index update.
    save_options = tf.train.CheckpointOptions(
        experimental_write_callbacks=[lambda: points.reach("checkpoint.save")]
    )
    restored = restore(
        checkpoint,
        manager
        if is_chief
        else tf.train.CheckpointManager(
            checkpoint, ckpt_dir, max_to_keep=run.keep_checkpoints
        ),
    )
    history = json.loads(history_var.numpy().decode())
    start_step = int(trainer.global_step.numpy())
    if restored:
        console.line(
            f"Restored {restored} at step {start_step} (epoch "
            f"{start_step // steps_per_epoch + 1}/{run.epochs})"
        )
    distribute.check_same_step(strategy, start_step, ckpt_dir)

    writer = (
        tf.summary.create_file_writer(os.path.join(workdir, "summaries"))
        if is_chief
        else tf.summary.create_noop_writer()
    )
    iterators = make_iterators(start_step)
    spe = steps_per_epoch
    total_steps = run.total_steps(spe)
    step_hooks = [h for h in hooks if h.every_steps > 0]
    first_epoch = start_step // spe
    # The session's first `train_loop` call traces (and XLA-compiles) the
    # step; it is kept apart so that throughput figures are steady-state.
    first_loop = None

    for epoch in range(first_epoch, run.epochs):
        epoch_end = min((epoch + 1) * spe, total_steps)
        step = int(trainer.global_step.numpy())
        if step >= epoch_end:
            break
        sums = None
        steps_done = 0
        epoch_first_loop = None
        trainer.reset_progress()
        t0 = time.perf_counter()
        with console.epoch(
            epoch=epoch + 1,
            epochs=run.epochs,
            steps=epoch_end - step,
            num_nets=trainer.num_nets,
            examples_per_step=examples_per_step,
            read_progress=trainer.read_progress,
        ) as progress:
            while step < epoch_end:
                n = _loop_length(
                    step, epoch_end, run.loop_steps(spe), step_hooks
                )
                t_loop = time.perf_counter()
                stats = trainer.train_loop(iterators, n)
                dt = time.perf_counter() - t_loop
                if first_loop is None:
                    first_loop = {"steps": n, "seconds": dt}
                    epoch_first_loop = first_loop
                _check_finite(trainer, stats, manager)
                step += n
                steps_done += n
                sums = _accumulate(sums, stats, n)
                _log_loop(step, n, dt, stats)
                for hook in step_hooks:
                    if step % hook.every_steps == 0:
                        hook.on_steps(step)
                points.reach("loop.after_steps")
            train = [_epoch_train_logs(s, steps_done, trainer) for s in sums]
            progress.finish(
                steps_done,
                [t["loss"] for t in train],
                [t["accuracy"] for t in train],
            )
        seconds = time.perf_counter() - t0
        logs = {
            "epoch": epoch + 1,
            "step": step,
            "seconds": seconds,
            "train_images_per_sec": steps_done
            * examples_per_step
            / max(seconds, 1e-9),
            "learning_rate": trainer.learning_rates(),
            "train": train,
        }
        if epoch_first_loop is not None:
            # This session's first loop: its steps and seconds, tracing
            # included (`steady_images_per_sec` leaves them out).
            logs["first_loop"] = epoch_first_loop
        # `last`: the schedule's final epoch (grafting skips its graft);
        # `stop`: this session ends here (--max_steps), so evaluate and save.
        last = epoch + 1 == run.epochs
        stop = last or step >= total_steps
        if (epoch + 1) % run.eval_every == 0 or stop:
            t_eval = time.perf_counter()
            logs["test"] = trainer.evaluate(eval_dataset)
            # Forward-only speed, comparable with train_images_per_sec
            # (images per second that each net sees).
            logs["eval_seconds"] = time.perf_counter() - t_eval
            logs["eval_images_per_sec"] = logs["test"].get(
                "images", 0
            ) / max(logs["eval_seconds"], 1e-9)
            logging.debug("eval | epoch: %d | %s", epoch + 1, _fmt_eval(logs))
        for hook in hooks:
            hook.on_epoch_end(epoch, logs, last)
        console.line(
            console_lib.epoch_line(
                logs,
                run.epochs,
                trainer.num_nets,
                [hook.describe(logs) for hook in hooks],
            )
        )
        history.append(logs)
        history_var.assign(io.dumps_json(history))
        if (epoch + 1) % run.checkpoint_every == 0 or stop:
            _save(manager, trainer.global_step, save_options)
        with writer.as_default(step=step):
            _write_summaries(logs)
        if is_chief:
            io.atomic_write_json(os.path.join(workdir, "history.json"), history)
    writer.flush()
    if save_dir != ckpt_dir:
        distribute.remove_worker_scratch(save_dir)
    return history


def _loop_length(step, epoch_end, steps_per_loop, step_hooks):
    n = epoch_end - step
    if steps_per_loop:
        n = min(n, steps_per_loop)
    for hook in step_hooks:
        n = min(n, hook.every_steps - step % hook.every_steps)
    return max(n, 1)


def _check_finite(trainer, stats, manager):
    """Raises `NonFiniteError` (on_nan=stop) or logs skipped batches."""
    for i, st in enumerate(stats):
        bad = st.get("first_nonfinite")
        if bad is None:
            continue
        loss = bad["loss"]
        what = (
            f"loss is {loss}"
            if not math.isfinite(loss)
            else f"a gradient is not finite (loss {loss:.4g})"
        )
        where = f"net {i} step {bad['step']} lr {bad['lr']:.4g}: {what}"
        if trainer.on_nan == "stop":
            last = manager.latest_checkpoint or "none (no checkpoint yet)"
            raise NonFiniteError(f"{where}; last good checkpoint: {last}")
        logging.warning(
            "%s; skipped %d batch(es) of net %d in this loop",
            where,
            st["nonfinite_steps"],
            i,
        )


def _accumulate(sums, stats, n):
    if sums is None:
        sums = [{"loss": 0.0, "accuracy": 0.0, "skipped": 0} for _ in stats]
    for s, st in zip(sums, stats):
        s["loss"] += st["loss"] * n
        s["accuracy"] += st["accuracy"] * n
        s["skipped"] += st.get("nonfinite_steps", 0)
    return sums


def _epoch_train_logs(sums, steps_done, trainer):
    logs = {
        "loss": sums["loss"] / steps_done,
        "accuracy": sums["accuracy"] / steps_done,
    }
    if trainer.on_nan == "skip_batch":
        logs["skipped_batches"] = sums["skipped"]
    return logs


def _log_loop(step, n, dt, stats):
    # Orbit's per-loop line; the console shows the same live (--verbosity=1).
    parts = [f"train | step: {step:6d} | steps/sec: {n / max(dt, 1e-9):6.1f}"]
    parts += [f"net_{i}/loss: {st['loss']:.4f}" for i, st in enumerate(stats)]
    logging.debug(" | ".join(parts))


def _fmt_eval(logs):
    test = logs["test"]
    parts = [
        f"net_{i}/top1: {r['top1']:.4f}" for i, r in enumerate(test["nets"])
    ]
    if len(test["nets"]) > 1:
        parts.append(f"ensemble/top1: {test['ensemble']['top1']:.4f}")
    return " | ".join(parts)


def _write_summaries(logs):
    for i, tr in enumerate(logs["train"]):
        summaries.scalar(f"net_{i}/train_loss", tr["loss"])
        summaries.scalar(f"net_{i}/train_accuracy", tr["accuracy"])
        summaries.scalar(f"net_{i}/learning_rate", logs["learning_rate"][i])
        if "skipped_batches" in tr:
            summaries.scalar(f"net_{i}/skipped_batches", tr["skipped_batches"])
    if "test" in logs:
        for i, r in enumerate(logs["test"]["nets"]):
            summaries.scalar(f"net_{i}/test_top1", r["top1"])
            summaries.scalar(f"net_{i}/test_loss", r["loss"])
        if len(logs["test"]["nets"]) > 1:
            summaries.scalar(
                "ensemble/test_top1", logs["test"]["ensemble"]["top1"]
            )
    summaries.scalar("train_images_per_sec", logs["train_images_per_sec"])
    if "eval_images_per_sec" in logs:
        summaries.scalar("eval_images_per_sec", logs["eval_images_per_sec"])
    for key, value in logs.get("scalars", {}).items():
        summaries.scalar(key, value)
