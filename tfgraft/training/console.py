"""What a run shows a person: a header, live epoch bars, one line per epoch.

README ("The console") shows the lines. Where the stream is no terminal (a
log file: the study runner appends each job's output to its `study.log`),
nothing is drawn with `\\r`: there is no bar, and every event is one plain
line. Workers other than the chief show nothing (`enabled=False`).

The live bar never slows the steps: the trainer adds each step's loss,
correct count, examples and one to a small `progress` variable inside its
`tf.function` (no host sync), and a thread of the console reads that
variable every `POLL_SECONDS` while the step loop runs; the summary line
is computed from the loop's own host statistics, not from those reads.
"""

import logging
import sys
import threading
import time

# Seconds between two reads of the trainer's progress variable.
POLL_SECONDS = 0.25


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def fmt_percent(values):
    """`[0.412, 0.42]` -> `41.2/42.0%` (one value: `41.2%`)."""
    return "/".join(f"{100 * v:.1f}" for v in values) + "%"


def fmt_nets(values, percent=False):
    """Every net's value for one or two nets (`1.618/1.592`, `41.2/42.0%`),
    mean and range for more (`1.618 (1.592-1.650)`, `41.2% (40.1-42.0)`)."""
    scale, digits, unit = (100.0, 1, "%") if percent else (1.0, 3, "")
    if len(values) <= 2:
        return "/".join(f"{scale * v:.{digits}f}" for v in values) + unit
    mean = scale * sum(values) / len(values)
    lo, hi = scale * min(values), scale * max(values)
    return f"{mean:.{digits}f}{unit} ({lo:.{digits}f}-{hi:.{digits}f})"


def fmt_seconds(seconds):
    """`75.2` -> `75 s`, `3725` -> `1h02m05s`."""
    seconds = int(round(seconds))
    if seconds < 100:
        return f"{seconds} s"
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def train_text(losses, accuracies):
    """`loss 1.618/1.592 acc 41.2/42.0%` for the bar and the summary."""
    return f"loss {fmt_nets(losses)} acc {fmt_nets(accuracies, percent=True)}"


def epoch_line(logs, epochs, num_nets, extras=()):
    """The summary line of one epoch's `logs` (the loop's history entry).

    Args:
        logs: the epoch's log dict (`epoch`, `seconds`, `train`, optional
            `test`, `train_images_per_sec` per net).
        epochs: the run's number of epochs.
        num_nets: nets trained side by side (img/s counts all of them).
        extras: further fragments (the hooks' `describe`).
    """
    train = logs["train"]
    parts = [
        "train "
        + train_text([t["loss"] for t in train], [t["accuracy"] for t in train])
    ]
    test = logs.get("test")
    if test:
        text = f"test top1 {fmt_percent([r['top1'] for r in test['nets']])}"
        if "ensemble" in test:
            text += f" ens {fmt_percent([test['ensemble']['top1']])}"
        parts.append(text)
    ips = logs["train_images_per_sec"] * num_nets
    parts.append(f"{ips:.0f} img/s")
    parts.extend(x for x in extras if x)
    parts.append(fmt_seconds(logs["seconds"]))
    return f"epoch {logs['epoch']}/{epochs}: " + " | ".join(parts)


class Console:
    """A run's lines for a person (see the module docstring).

    Args:
        enabled: show anything at all (False on non-chief workers).
        live: draw live bars; only where `stream` is a terminal.
        stream: where to write (default: `sys.stderr` at each write).
    """

    def __init__(self, enabled=True, live=True, stream=None):
        self._stream = stream
        self.enabled = bool(enabled)
        self.live = self.enabled and bool(live) and _isatty(self.stream)
        self._bar = None

    @property
    def stream(self):
        return self._stream if self._stream is not None else sys.stderr

    def line(self, text):
        """Writes one line (above a live bar, which is redrawn below)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def header(self, parts):
        """The run's first line: `parts` joined by ` | `."""
        self.line(" | ".join(p for p in parts if p))

    def epoch(self, *, epoch, epochs, **options):
        """A context manager showing one epoch's steps (`EpochProgress`;
        `options`: its `steps`, `num_nets`, `examples_per_step` and
        `read_progress`)."""
        return EpochProgress(self, desc=f"epoch {epoch}/{epochs}", **options)

    def _open_bar(self, **options):
        """A tqdm bar on the stream; `line` writes above it."""
        import tqdm

        self._bar = tqdm.tqdm(file=self.stream, dynamic_ncols=True, **options)
        return self._bar

    def tasks(self, desc, names):
        """Iterates over `names`, showing which one runs (exports...).

        At a terminal a bar counts them; elsewhere each finished one is a
        line `<desc> <name>: <seconds>`.
        """
        names = list(names)
        if not self.enabled:
            yield from names
            return
        t_all = time.perf_counter()
        bar = None
        if self.live:
            bar = self._open_bar(
                total=len(names),
                desc=desc,
                unit="",
                bar_format="{desc}: {n}/{total}{postfix} [{elapsed}]",
            )
        try:
            for name in names:
                t0 = time.perf_counter()
                if bar is not None:
                    bar.set_postfix_str(f"{name}…")
                yield name
                seconds = time.perf_counter() - t0
                if bar is not None:
                    bar.update(1)
                else:
                    self.line(f"{desc} {name}: {seconds:.1f} s")
        finally:
            if bar is not None:
                bar.set_postfix_str(
                    f"{', '.join(names)} in "
                    f"{time.perf_counter() - t_all:.0f} s",
                    refresh=False,
                )
                bar.close()
                self._bar = None


class EpochProgress:
    """One epoch's live bar (a context manager; see `Console.epoch`).

    `read_progress()` returns, per net, the epoch's sums `[loss, correct,
    examples, steps]` so far (the trainer's `read_progress`); it is called
    from a thread every `POLL_SECONDS`; `finish` sets the exact figures.
    """

    def __init__(
        self,
        console,
        *,
        desc,
        steps,
        num_nets,
        examples_per_step,
        read_progress=None,
    ):
        self.console = console
        self.desc = desc
        self.steps = int(steps)
        self.num_nets = num_nets
        self.examples_per_step = examples_per_step
        self.read_progress = read_progress
        self._bar = None
        self._stop = threading.Event()
        self._thread = None
        self._t0 = None

    def __enter__(self):
        self._t0 = time.perf_counter()
        if not self.console.live:
            return self
        self._bar = self.console._open_bar(
            total=self.steps, desc=self.desc, unit="step", leave=True
        )
        for handler in _log_handlers():
            handler.addFilter(self._clear_bar)
        if self.read_progress is not None:
            self._thread = threading.Thread(
                target=self._poll, name="tfgraft-progress", daemon=True
            )
            self._thread.start()
        return self

    def _clear_bar(self, record):
        """A log handler's filter: a record (a warning) clears the bar's
        line first; the next poll draws it again below it."""
        del record
        self._bar.clear()
        return True

    def _poll(self):
        while not self._stop.wait(POLL_SECONDS):
            try:
                sums = self.read_progress()
            except Exception:  # noqa: BLE001 - a display must not kill a run
                return
            steps = int(max(row[3] for row in sums))
            if steps > 0:
                self._draw(
                    steps,
                    [row[0] / max(row[3], 1.0) for row in sums],
                    [row[1] / max(row[2], 1.0) for row in sums],
                )

    def _draw(self, steps, losses, accuracies):
        bar = self._bar
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        ips = steps * self.examples_per_step * self.num_nets / elapsed
        bar.n = min(steps, self.steps)
        bar.set_postfix_str(
            f"{train_text(losses, accuracies)}, {ips:.0f} img/s",
            refresh=False,
        )
        bar.refresh()

    def finish(self, steps, losses, accuracies):
        """The epoch's exact figures (from the loop's host statistics)."""
        if self._bar is None:
            return
        self._stop_thread()
        self._draw(steps, losses, accuracies)

    def _stop_thread(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __exit__(self, *exc):
        self._stop_thread()
        if self._bar is not None:
            for handler in _log_handlers():
                handler.removeFilter(self._clear_bar)
            self._bar.close()
            self.console._bar = None
            self._bar = None
        return False


def _log_handlers():
    """The root logger's handlers (absl's, under an absl app)."""
    return list(logging.getLogger().handlers)
