"""Statistics of paired differences (B − A over folds, seeds or images): the mean with a 95% paired
t interval, and the paired test that suits the number of pairs. Used by store.paired's verdicts,
the Compare page, `roofseg compare` and the report."""
from __future__ import annotations

import itertools
import math

import numpy as np

LEVEL = 0.95  # the interval's coverage
# Below 6 pairs no exact paired test can reach p < 0.05: the smallest two-sided p of a sign-flip
# or Wilcoxon test is 2 / 2**n (0.0625 for n = 5), so with fewer pairs a test alone says nothing.
WILCOXON_MIN_N = 6
TIE = 1e-12  # differences this small are ties (identical floats written by identical runs)


def sign_flip_p(d: np.ndarray) -> float:
    """Exact two-sided sign-flip test of mean 0: the share of the 2**n sign patterns whose mean is
    at least as far from 0 as the observed one (used only for n < WILCOXON_MIN_N, so <= 32)."""
    obs = abs(d.mean())
    flips = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
    return float(np.mean(np.abs(flips @ d) / len(d) >= obs - TIE))


def paired_stats(diffs, unit: str = "pairs") -> dict:
    """Mean of the differences B − A with a 95% paired t interval, a test and why that test:
    {n, diff, sd, ci_low, ci_high, test, p_value, test_why, wins: {a, b, tie}}.

    n >= 6: Wilcoxon signed-rank (no normality assumed). n < 6: no rank or sign test can reach
    p < 0.05, so the exact sign-flip p is shown for completeness and the interval carries the verdict.
    """
    d = np.asarray(diffs, dtype=float)
    n = len(d)
    out = {"n": n, "diff": float(d.mean()) if n else math.nan, "sd": math.nan,
           "ci_low": math.nan, "ci_high": math.nan, "test": None, "p_value": math.nan,
           "test_why": "", "wins": {"a": int((d < -TIE).sum()), "b": int((d > TIE).sum()),
                                    "tie": int((np.abs(d) <= TIE).sum())}}
    if n == 0:
        out["test_why"] = f"no {unit} to compare"
        return out
    if n == 1:
        out["test_why"] = f"one of {unit}: no interval and no test, only the direction"
        return out
    from scipy import stats  # here, not at the top: 1.5 s to import, and the Runs page lists runs without it
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.5 + LEVEL / 2, n - 1)) * sd / math.sqrt(n)
    out.update(sd=sd, ci_low=out["diff"] - half, ci_high=out["diff"] + half)
    if n >= WILCOXON_MIN_N:
        nonzero = d[np.abs(d) > TIE]
        # all ties: nothing to rank; scipy would warn and return nan
        p = float(stats.wilcoxon(nonzero).pvalue) if len(nonzero) else 1.0
        out.update(test="wilcoxon", p_value=p,
                   test_why=f"n={n} {unit}: Wilcoxon signed-rank test (no normality assumed); "
                            f"the interval is the {LEVEL:.0%} paired t interval")
    else:
        out.update(test="sign-flip", p_value=sign_flip_p(d),
                   test_why=f"n={n} {unit}: Wilcoxon cannot reach p<0.05 below {WILCOXON_MIN_N}, "
                            f"nor can this exact sign-flip test (smallest possible p "
                            f"{2 / 2 ** n:.4g}), so the verdict rests on the {LEVEL:.0%} paired t interval")
    return out


def p_text(p: float) -> str:
    """A p-value as printed: three significant digits, or "<0.001"."""
    return "<0.001" if p < 0.001 else f"={p:.3g}"
