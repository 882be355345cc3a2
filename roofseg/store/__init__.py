"""Store layer: run folders (the source of truth), results.parquet derived from them, live progress, comparisons.

JSON and parquet only: nothing here imports torch, so the Runs, Compare and Sweeps pages load at once.
"""
