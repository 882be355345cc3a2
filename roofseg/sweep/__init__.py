"""Sweep layer: optuna studies whose trials are ordinary runs.
"""
