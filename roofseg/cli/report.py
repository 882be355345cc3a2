"""`python -m roofseg report`: one self-contained HTML file handing runs over (roofseg.report).

Imports nothing heavy at module level: cli/main.py imports this module on every command.
"""
from __future__ import annotations

import argparse

REPORT_HELP = """Write one HTML file that opens offline and holds everything someone else needs to judge
the runs: the dataset check and what was left out, each run's recipe with the reason behind each
choice, learning curves, the cross-validation table, the paired comparison of each run against
the first, out-of-fold overlays worst first, the predictions for the unlabeled images, and the
environment. Unfinished or failed runs are shown with what they recorded.
"""


def add_parser(sub) -> None:
    """The `report` subcommand (called by cli/main.py's build_parser)."""
    r = sub.add_parser("report", help="write a self-contained HTML report of one or more runs",
                       description=REPORT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("runs", nargs="+", metavar="RUN",
                   help="run ids (folder names under --runs-dir); the first is the reference the others are compared with")
    r.add_argument("--out", required=True, help="the HTML file to write, e.g. report.html (replaced if it exists)")
    r.add_argument("--runs-dir", default="runs")


def cmd_report(a) -> int:
    from roofseg.report import write_report
    from roofseg.store import runs
    dirs = [runs.resolve(a.runs_dir, r) for r in a.runs]  # a typo fails at once, naming the run
    print(write_report(dirs, a.out))
    return 0
