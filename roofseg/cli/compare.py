"""`python -m roofseg compare`: paired comparison of runs (roofseg.store.paired), as text or JSON.

Imports nothing heavy at module level: cli/main.py imports this module on every command.
"""
from __future__ import annotations

import argparse
import json

COMPARE_HELP = """Is B better than A beyond the noise? Runs that share their folds (same data, k and
split seed) are paired fold by fold; others are compared image by image on their out-of-fold
per-image Dice. Each verdict comes with a 95% paired t interval for B − A and a test.
With more than two runs, each is compared against the first. --a/--b take several runs per side
(seeds of one recipe: seed pairs with seed, fold with fold).
"""


def add_parser(sub) -> None:
    """The `compare` subcommand (called by cli/main.py's build_parser)."""
    c = sub.add_parser("compare", help="paired comparison of runs: is B better than A beyond the noise?",
                       description=COMPARE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("runs", nargs="*", metavar="RUN",
                   help="run ids (folder names under --runs-dir): RUN_A RUN_B [RUN ...]")
    # dest side_a/side_b: the command functions receive the namespace as `a`
    c.add_argument("--a", nargs="+", metavar="RUN", dest="side_a", help="side A: one or more runs (seeds)")
    c.add_argument("--b", nargs="+", metavar="RUN", dest="side_b", help="side B: one or more runs (seeds)")
    c.add_argument("--runs-dir", default="runs")
    c.add_argument("--format", choices=["text", "json"], default="text")
    c.add_argument("--epoch", choices=["last", "best"], default="last",
                   help="each fold's value: its last epoch (honest) or its best (chosen on the fold "
                        "itself, so optimistic) [last]")
    c.add_argument("--top", type=int, default=5, help="images where A and B disagree most to list [5]")


def cmd_compare(a) -> int:
    from roofseg.store import paired, runs
    if a.side_a or a.side_b:
        if a.runs or not (a.side_a and a.side_b):
            raise ValueError("give --a RUN [RUN ...] and --b RUN [RUN ...] together, "
                             "or RUN_A RUN_B [RUN ...] without them")
        groups = [(a.side_a, a.side_b)]
    else:
        if len(a.runs) < 2:
            raise ValueError("give two runs to compare (RUN_A RUN_B), or --a RUN ... --b RUN ...")
        groups = [([a.runs[0]], [r]) for r in a.runs[1:]]
    # resolve every id first: a typo fails at once, before any comparison is printed
    groups = [([runs.resolve(a.runs_dir, r) for r in ga], [runs.resolve(a.runs_dir, r) for r in gb])
              for ga, gb in groups]
    reports = [paired.report(ga, gb, epoch=a.epoch, top=a.top) for ga, gb in groups]
    if a.format == "json":
        print(json.dumps({"epoch": a.epoch, "comparisons": reports}, indent=1))
    else:
        print("\n\n".join("\n".join(text_lines(r, a.epoch)) for r in reports))
    return 0


def text_lines(rep: dict, epoch: str) -> list[str]:
    """One comparison (paired.report) as lines: who is A and B, the verdicts, tests, wins, notes."""
    states = rep["states"]
    out = [f"{side}: " + ", ".join(f"{r} ({states[r]})" for r in rep[key])
           for side, key in (("A", "a"), ("B", "b"))]
    out.append(f"pairing: {rep['dice']['pairing']}")
    which = "last epoch" if epoch == "last" else "best epoch (optimistic)"
    if not rep["dice"]["paired"] and rep["dice"]["verdict"].endswith(rep["dice"]["pairing"]):
        out.append("Dice and IoU fold by fold: not compared (see pairing)")  # the reason, said once
    else:
        for key in ("dice", "iou"):
            r = rep[key]
            out.append(f"{r['label']}, {which} of each fold: {r['verdict']}")
            if r["paired"]:
                out += _details(r)
    im = rep["images"]
    out.append(f"{im['label']} per image (out of fold): {im['verdict']}")
    if im["paired"]:
        out += _details(im)
        if im["disagree"]:
            out.append("  most disagreement:")
            w = max(5, *(len(d["name"]) for d in im["disagree"]))
            out.append(f"    {'image':<{w}}  {'A':>6}  {'B':>6}  {'B−A':>7}")
            out += [f"    {d['name']:<{w}}  {_f(d['a']):>6}  {_f(d['b']):>6}  {_f(d['diff'], True):>7}"
                    for d in im["disagree"]]
    notes = list(dict.fromkeys(n for k in ("dice", "iou", "images") for n in rep[k]["notes"]))
    out += [f"note: {n}" for n in notes]
    return out


def _details(r: dict) -> list[str]:
    from roofseg.store.compare import TEST_NAMES
    from roofseg.store.stats import p_text
    w = r["wins"]
    p = f" p{p_text(r['p_value'])}" if r["p_value"] is not None else ""
    test = TEST_NAMES.get(r["test"], "none")
    return [f"  mean A {_f(r['mean_a'])}, B {_f(r['mean_b'])}; wins: B {w['b']}, A {w['a']}, ties {w['tie']}",
            f"  test: {test}{p}. {r['test_why']}"]


def _f(x, signed: bool = False) -> str:
    if x is None:
        return "—"
    return (f"{x:+.3f}" if signed else f"{x:.3f}").replace("-", "−")
