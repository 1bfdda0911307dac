"""Baselines that say how hard a data set is, on the same clips as ESTM: the official
DCASE 2020 Task 2 autoencoder (`autoencoder.py`), detectors on clip statistics
(`statistics.py`) and the runner that fits and scores them all (`run.py`).

Imports go one way: this package uses the data loading, features and metrics of
`estm_ref`; only command-line, pipeline and benchmark code imports it.
"""
