"""Benchmarks of the selective scan and of an ESTM training step (not installed with the package).

Run from a source tree: `python bench/scan.py --quick`, `python bench/train_step.py --quick`
(there is no `estm` subcommand for them; docs/benchmarks.md). They measure and write results; `tests/` asserts.
"""
