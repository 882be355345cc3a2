"""Exec layer: a run in its own process: the process lifecycle (process.py), launching and
cancelling runs (control.py), and the worker that executes a run folder (worker.py).
"""
