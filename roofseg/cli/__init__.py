"""CLI layer: `python -m roofseg` and the `roofseg` console script.
"""
