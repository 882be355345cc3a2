"""Report layer: one self-contained HTML file that hands a set of runs over to someone else (issue #12).

Sits above store and data (it reads run folders and dataset files) and below cli; it imports no
torch, engine, model or streamlit, so a report of finished runs is written without loading a model.
`write_report(run_dirs, out_path)` is the entry point (report/html.py).
"""
from roofseg.report.html import ReportError, write_report

__all__ = ["ReportError", "write_report"]
