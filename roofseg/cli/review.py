"""`python -m roofseg data review RUN`: the labels a finished k-fold run's out-of-fold
predictions dispute most, worst first (roofseg.store.review).

Imports nothing heavy at module level: cli/main.py imports this module on every command.
"""
from __future__ import annotations

import argparse
import json

REVIEW_HELP = """Rank the labelled images of a finished k-fold run by how well each label agrees with
the out-of-fold prediction of the model that never saw it (1 = full agreement). Images whose
disagreement stands out from the rest are flagged (!), each with a one-line reason, e.g.
"model finds 2 roofs (1,300 px) the label lacks". The Data page shows the same ranking with pictures.
"""


def add_parser(dsub) -> None:
    """The `data review` subcommand (called by cli/main.py's build_parser on the `data` group)."""
    r = dsub.add_parser("review", help="rank labels by how much a k-fold run's out-of-fold predictions dispute them",
                        description=REVIEW_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("run", metavar="RUN", help="a finished k-fold run: its id (folder name under --runs-dir) or folder")
    r.add_argument("--runs-dir", default="runs")
    r.add_argument("--top", type=int, metavar="N", help="show only the N worst labels")
    r.add_argument("--format", choices=["text", "json"], default="text")


def text(rev: dict, top: int | None = None) -> str:
    """The review as the lines the command prints."""
    rows = rev["images"] if top is None else rev["images"][:max(0, top)]
    t = rev["thresholds"]
    out = [f"run {rev['run']} on {rev['data']}: {len(rev['images'])} labelled images reviewed, "
           f"{rev['flagged']} flagged (!)",
           f"confident: roof at p >= {t['roof']:.2f}, background at p <= {1 - t['background']:.2f}; {rev['rule']}",
           "", f"{'rank':>4}  {'score':>5}  {'':1}  {'image':<16} reason"]
    for r in rows:
        out.append(f"{r['rank']:>4}  {r['score']:5.3f}  {'!' if r['flagged'] else ' '}  {str(r['name']):<16} {r['reason']}")
    if top is not None and len(rows) < len(rev["images"]):
        out.append(f"... {len(rev['images']) - len(rows)} more (drop --top to see them)")
    for name, why in rev["not_reviewed"].items():
        out.append(f"not reviewed {name}: {why}")
    return "\n".join(out)


def cmd_review(a) -> int:
    from roofseg.store import review, runs
    rev = review.review(runs.resolve(a.runs_dir, a.run))
    if a.format == "json":
        if a.top is not None:
            rev["images"] = rev["images"][:max(0, a.top)]
        print(json.dumps(rev, indent=1))
    else:
        print(text(rev, a.top))
    return 0
