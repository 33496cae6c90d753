"""The figures a study reads from one run's `report.json`.

`figures(report)` returns `{view: row}`: the view "" is the arm itself,
others are extra rows the same run yields (`best_net` and `ensemble` of a
several-net run; a pruning run's other dead-branch form). A row holds
`best_top1` and `final_top1` (fractions), `params`, `flops` with its
`flops_convention`, and `extra`, a dict of further numbers shown in the
table. Each job's reader is registered in `READERS` by the report's
`job` field; unknown jobs get the generic reader (`report["nets"]`).
"""

import statistics


def _row(best, final, params, flops, convention, **extra):
    return {
        "best_top1": best,
        "final_top1": final,
        "params": params,
        "flops": flops,
        "flops_convention": convention,
        "extra": {k: v for k, v in extra.items() if v is not None},
    }


def _pff_row(best, final, cost, **extra):
    """`_row` of a pruned net: `cost` holds its `pff` params and flops."""
    return _row(best, final, cost["params"], cost["flops"], "pff", **extra)


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def generic(report):
    """Nets (mean over nets), and for several nets the best net and the
    ensemble."""
    nets = report["nets"]
    conv = report.get("flops_convention", "macs")
    n0 = nets[0]

    def row(best, final, params=n0["params"], flops=n0["flops"]):
        return _row(best, final, params, flops, conv)

    rows = {
        "": row(
            _mean(n["best_top1"] for n in nets),
            _mean(n["final_top1"] for n in nets),
        )
    }
    if len(nets) > 1:
        rows["best_net"] = row(
            max(n["best_top1"] for n in nets),
            max(n["final_top1"] for n in nets),
        )
        ens = report.get("ensemble")
        if ens:
            rows["ensemble"] = row(
                ens["best_top1"],
                ens["final_top1"],
                n0["params"] * len(nets),
                n0["flops"] * len(nets),
            )
    return rows


def grafting(report):
    """`generic`, plus invalid filters (L1 below each threshold) at the
    end, mean over the nets."""
    rows = generic(report)
    end = report.get("invalid_filters", {}).get("end") or []
    if end:
        extra = {}
        for t in end[0]["below"]:
            extra[f"invalid_l1<{t}"] = _mean(e["below"][t] for e in end)
        for row in rows.values():
            row["extra"].update(extra)
    return rows


def stripe(report):
    """The pruned (compact) net in the `pff` convention; without pruning,
    the trained net. Where the two dead-branch forms differ, each is a
    view of its own (`dead_constant`, `dead_shortcut`); each of
    `--extra_cuts` is a view `cut<percent>` (and `cut<percent>_dead_<form>`).
    The compact net is evaluated once, on the selected checkpoint: its best
    and final top-1 are the same number."""
    s = report["stripe"]
    pff = s["complexity"]["pff"]
    if not s.get("pruned"):
        n = report["nets"][0]
        return {
            "": _pff_row(
                n["best_top1"],
                n["final_top1"],
                pff["after"],
                flops_cut_pct=0.0,
            )
        }
    acc = s["accuracy"]

    def rows_of(prefix, top1, cost, cut, threshold, forms):
        extra = {
            "flops_cut_pct": 100.0 * cut,
            "trained_top1": acc.get("before_top1"),
            "threshold": threshold,
        }
        out = {prefix: _pff_row(top1, top1, cost, **extra)}
        if len(set((forms or {}).values())) > 1:
            for form, value in forms.items():
                name = f"{prefix}_dead_{form}" if prefix else f"dead_{form}"
                out[name] = _pff_row(value, value, cost, **extra)
        return out

    rows = rows_of(
        "",
        acc["compact_top1"],
        pff["after"],
        pff["flops_reduction_pct"] / 100.0,
        s.get("prune_threshold", s.get("threshold")),
        acc.get("dead_branches"),
    )
    for c in s.get("extra_cuts") or []:
        rows.update(
            rows_of(
                f"cut{round(100 * c['flops_cut'])}",
                c["compact_top1"],
                c["pff"],
                c["achieved_cut"],
                c["threshold"],
                c.get("dead_branches"),
            )
        )
    return rows


def ekg(report):
    """The fine-tuned searched net. FLOPs and params in plain MACs (so a
    baseline row of the same study is comparable); the search's own
    FLOPs rate (EKG counter) is an extra column."""
    e = report["ekg"]
    acc = e["accuracy"]
    return {
        "": _row(
            acc["finetuned_best"],
            acc["finetuned_final"],
            e["params"]["macs"]["after"],
            e["flops"]["macs"]["after"],
            "macs",
            flops_rate_ekg=e.get("flops_rate"),
            searched_top1=acc.get("searched"),
            steps_not_lowest_loss=e.get("steps_not_lowest_loss"),
        )
    }


def lwdna(report):
    """The derived net (the arm) and the uniform net trained beside it
    (`--train_uniform`, view `uniform`), in the DHP convention (conv and
    classifier weights, no BN)."""
    rows = {}
    eq = report.get("equal_flops") or {}
    for view, key in (("", "derived"), ("uniform", "uniform")):
        r = report.get(key)
        if r is None:
            continue
        extra = {"trainable_params": r.get("trainable_params")}
        if key == "derived":
            extra["flops_vs_uniform"] = eq.get("flops_ratio")
            extra["params_vs_uniform"] = eq.get("params_ratio")
        rows[view] = _row(
            r["best_top1"], r["final_top1"], r["params"], r["flops"], "dhp",
            **extra,
        )
    return rows


def l1prune(report):
    """The pruned, fine-tuned net in the `pff` convention (as `stripe`)."""
    r = report["l1prune"]
    pff = r["complexity"]["pff"]
    ft = r["accuracy"]["finetuned"]
    return {
        "": _pff_row(
            ft["best_top1"],
            ft["final_top1"],
            pff["after"],
            flops_cut_pct=pff["flops_reduction_pct"],
            params_cut_pct=pff["params_reduction_pct"],
            pruned_top1=r["accuracy"]["pruned"]["top1"],
        )
    }


READERS = {
    "grafting": grafting,
    "l1prune": l1prune,
    "stripe": stripe,
    "ekg": ekg,
    "lwdna": lwdna,
}


def figures(report):
    """`{view: row}` of one run's report (see the module docstring)."""
    return READERS.get(report.get("job"), generic)(report)
