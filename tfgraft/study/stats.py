"""Small-sample statistics of a study: means, spreads, paired t-intervals.

Pure Python (no SciPy): the Student-t quantile comes from a table of the
two-sided 95% values for 1-30 degrees of freedom and the Cornish-Fisher
expansion above that (error < 1e-3 there).
"""

import math
import statistics

# t_{0.975, df} for df = 1..30.
_T975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060,
    2.2622, 2.2281, 2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199,
    2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639,
    2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip
_Z975 = 1.959964


def t975(df):
    """The 97.5% quantile of Student's t with `df` degrees of freedom."""
    if df < 1:
        raise ValueError(f"df={df}: needs at least 1 degree of freedom")
    if df <= len(_T975):
        return _T975[int(df) - 1]
    z = _Z975
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


def describe(values):
    """`{"n", "mean", "std"}` of `values` (sample std; None below 2)."""
    values = [float(v) for v in values]
    if not values:
        return {"n": 0, "mean": None, "std": None}
    return {
        "n": len(values),
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else None,
    }


def mean_interval(values):
    """Mean of `values` with its 95% t-interval (None below 2 values)."""
    d = describe(values)
    if d["n"] < 2:
        return {**d, "low": None, "high": None}
    half = t975(d["n"] - 1) * d["std"] / math.sqrt(d["n"])
    return {**d, "low": d["mean"] - half, "high": d["mean"] + half}


def paired_difference(a, b):
    """Paired difference a - b over the keys (seeds) both dicts hold.

    Returns `mean_interval` of the differences plus the seeds used; the
    interval is the paired t-interval (95%).
    """
    seeds = sorted(set(a) & set(b))
    out = mean_interval([a[s] - b[s] for s in seeds])
    out["seeds"] = seeds
    return out
