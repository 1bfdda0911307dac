"""Benchmarks of the selective scan and of an ESTM training step (not installed with the package).

Run from a source tree: `python bench/scan.py --quick`, `python bench/train_step.py --quick`,
or `estm bench scan|train ...`. They measure and write results; `tests/` asserts.
"""
