"""A study's outputs: `study.json`, `study.md` and `study.png`.

`collect(study)` reads every finished cell; `write(study, data)` writes the
three files atomically into the study's workdir. Accuracies are fractions
in the JSON and percentages in the table.
"""

import dataclasses
import json
import os
import time

from tfgraft import io
from tfgraft import plotting
from tfgraft.study import figures as figures_lib
from tfgraft.study import runner
from tfgraft.study import stats

METRICS = ("best_top1", "final_top1")


def _cell_seconds(workdir, report):
    sessions = runner.read_record(workdir)
    if sessions:
        return sum(s["seconds"] for s in sessions)
    return report.get("wall_seconds")


def _rel(text):
    """`text` with the current directory's absolute path made relative
    (committed study results then name no machine's folders)."""
    cwd = os.getcwd() + os.sep
    return text.replace(cwd, "")


def collect(study):
    """Every cell's status and figures, the per-row statistics and the
    paired comparisons (the content of `study.json`)."""
    cells = []
    for cell in study.cells():
        entry = {
            "arm": cell.arm.name,
            "seed": cell.seed,
            "workdir": _rel(cell.workdir),
            "command": [
                "-m",
                f"train.{cell.arm.job}",
                *(_rel(a) for a in cell.argv),
            ],
        }
        path = os.path.join(cell.workdir, runner.REPORT)
        if os.path.isfile(path):
            with open(path) as f:
                report = json.load(f)
            entry["status"] = "done"
            entry["seconds"] = _cell_seconds(cell.workdir, report)
            entry["figures"] = figures_lib.figures(report)
        else:
            started = os.path.isdir(cell.workdir)
            entry["status"] = "started" if started else "pending"
        cells.append(entry)
    rows = _rows(study, cells)
    return {
        "title": study.title,
        "workdir": _rel(study.workdir),
        "seeds": list(study.seeds),
        "arms": [dataclasses.asdict(a) for a in study.arms],
        "cells": cells,
        "rows": rows,
        "comparisons": _comparisons(study, cells),
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _done(cells, label):
    """The done cells that have a row `label` (`arm` or `arm/view`), and
    the view."""
    arm, _, view = label.partition("/")
    done = [
        c
        for c in cells
        if c["arm"] == arm and c["status"] == "done" and view in c["figures"]
    ]
    return done, view


def _per_seed(cells, label, metric):
    """`{seed: value}` of one row (`arm` or `arm/view`) and metric."""
    done, view = _done(cells, label)
    rows = [(c["seed"], c["figures"][view]) for c in done]
    return {s: r[metric] for s, r in rows if r.get(metric) is not None}


def _rows(study, cells):
    labels = []
    for arm in study.arms:
        views = []
        for c in cells:
            if c["arm"] == arm.name and c["status"] == "done":
                views += [v for v in c["figures"] if v not in views]
        labels += [arm.name] + [f"{arm.name}/{v}" for v in views if v]
    rows = []
    for label in labels:
        done, view = _done(cells, label)
        if not done:
            rows.append({"label": label, "n": 0})
            continue
        first = done[0]["figures"][view]
        row = {
            "label": label,
            "n": len(done),
            "seeds": [c["seed"] for c in done],
            "flops_convention": first["flops_convention"],
            "per_seed": {},
        }
        for metric in (*METRICS, "params", "flops"):
            values = _per_seed(cells, label, metric)
            row["per_seed"][metric] = values
            row[metric] = stats.describe(values.values())
        secs = [c["seconds"] for c in done if c.get("seconds") is not None]
        row["seconds"] = stats.describe(secs)
        extras = [c["figures"][view]["extra"] for c in done]
        row["extra"] = {
            key: stats.describe(e[key] for e in extras if key in e)
            for key in first["extra"]
        }
        rows.append(row)
    return rows


def _comparisons(study, cells):
    out = []
    for comp in study.comparisons:
        for metric in METRICS:
            d = stats.paired_difference(
                _per_seed(cells, comp.a, metric),
                _per_seed(cells, comp.b, metric),
            )
            out.append({"label": comp.label, "metric": metric, **d})
    return out


# === Markdown ===


def _pct(d):
    if not d or d.get("mean") is None:
        return "–"
    if d.get("std") is None:
        return f"{100 * d['mean']:.2f}"
    return f"{100 * d['mean']:.2f} ± {100 * d['std']:.2f}"


def _count(d):
    if not d or d.get("mean") is None:
        return "–"
    m = d["mean"]
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if m >= scale:
            return f"{m / scale:.3g} {unit}"
    return f"{m:.3g}"


def _num(d):
    if not d or d.get("mean") is None:
        return "–"
    if abs(d["mean"]) >= 1e4:  # a count (params, FLOPs)
        return _count(d)
    if d.get("std") is None:
        return f"{d['mean']:.4g}"
    return f"{d['mean']:.4g} ± {d['std']:.2g}"


def _reading(c):
    if c["low"] is None:
        return "needs 2+ paired seeds"
    if c["low"] > 0:
        return "A higher"
    if c["high"] < 0:
        return "B higher"
    return "no difference resolved"


def markdown(data):
    """The `study.md` text: the per-row table and the paired comparisons."""
    lines = [f"# {data['title'] or 'Study'}", ""]
    done = sum(c["status"] == "done" for c in data["cells"])
    lines.append(
        f"{done} of {len(data['cells'])} runs done; seeds "
        f"{', '.join(map(str, data['seeds']))}. Top-1 in %, mean ± sample "
        "std over seeds; best = best test epoch, final = last epoch."
    )
    lines.append("")
    # Every row's extra columns, in first-seen order.
    extras = list(
        dict.fromkeys(k for r in data["rows"] for k in r.get("extra", {}))
    )
    head = ["arm", "n", "best top-1", "final top-1", "params", "FLOPs"]
    head += ["wall min", *extras]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for r in data["rows"]:
        cells = [r["label"], str(r["n"])]
        if r["n"]:
            minutes = {
                k: (v / 60 if v is not None else None)
                for k, v in r["seconds"].items()
            }
            cells += [
                _pct(r["best_top1"]),
                _pct(r["final_top1"]),
                _count(r["params"]),
                f"{_count(r['flops'])} ({r['flops_convention']})",
                _num(minutes),
            ]
            cells += [_num(r["extra"].get(k)) for k in extras]
        cells += ["–"] * (len(head) - len(cells))
        lines.append("| " + " | ".join(cells) + " |")
    if data["comparisons"]:
        lines += [
            "",
            "Paired by seed: mean of (A - B) in top-1 points, 95% "
            "t-interval.",
            "",
            "| A - B | metric | n | mean diff | 95% interval | reading |",
            "|---|---|---|---|---|---|",
        ]
        for c in data["comparisons"]:
            if c["mean"] is None:
                lines.append(
                    f"| {c['label']} | {c['metric']} | 0 | – | – | no pairs |"
                )
                continue
            interval = (
                f"[{100 * c['low']:+.2f}, {100 * c['high']:+.2f}]"
                if c["low"] is not None
                else "–"
            )
            lines.append(
                f"| {c['label']} | {c['metric']} | {c['n']} | "
                f"{100 * c['mean']:+.2f} | {interval} | {_reading(c)} |"
            )
    return "\n".join(lines) + "\n"


# === Picture ===


def plot(data):
    """PNG bytes: final top-1 per seed and arm (mean marked), and top-1 vs
    FLOPs when the rows' FLOPs differ; None without matplotlib or data."""
    rows = [r for r in data["rows"] if r["n"]]
    if not rows:
        return None
    plt = plotting.pyplot()
    if plt is None:
        return None
    by_flops = len({r["flops"]["mean"] for r in rows}) > 1
    fig, axes = plt.subplots(
        1,
        2 if by_flops else 1,
        figsize=(12 if by_flops else 7, 0.45 * len(rows) + 1.8),
        squeeze=False,
    )
    ax = axes[0][0]
    for y, r in enumerate(rows):
        for metric, marker, color, dy in (
            ("final_top1", "o", "C0", -0.12),
            ("best_top1", "^", "C1", 0.12),
        ):
            xs = [100 * v for v in r["per_seed"][metric].values()]
            ax.scatter(
                xs,
                [y + dy] * len(xs),
                marker=marker,
                color=color,
                alpha=0.6,
                label=metric.replace("_top1", "") if y == 0 else None,
            )
            if xs:
                m = sum(xs) / len(xs)
                ax.plot([m, m], [y + dy - 0.1, y + dy + 0.1], color=color)
    ax.set_yticks(range(len(rows)), [r["label"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("test top-1 (%), one point per seed, bar = mean")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title(data["title"] or "Study", fontsize=10)
    if by_flops:
        ax2 = axes[0][1]
        for k, r in enumerate(rows):
            f = r["per_seed"]["flops"]
            acc = r["per_seed"]["final_top1"]
            seeds = sorted(set(f) & set(acc))
            ax2.scatter(
                [f[s] / 1e6 for s in seeds],
                [100 * acc[s] for s in seeds],
                color=f"C{k % 10}",
                label=r["label"],
                alpha=0.7,
            )
        ax2.set_xlabel(f"FLOPs (M, {rows[0]['flops_convention']})")
        ax2.set_ylabel("final test top-1 (%)")
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return plotting.png(fig)


def write(study, data):
    """Writes `study.json`, `study.md` and `study.png` (atomically)."""
    root = study.workdir
    io.atomic_write_json(os.path.join(root, "study.json"), data)
    io.atomic_write_text(os.path.join(root, "study.md"), markdown(data))
    png = plot(data)
    if png is not None:
        io.atomic_write_bytes(os.path.join(root, "study.png"), png)
