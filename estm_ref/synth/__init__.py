"""Seeded synthetic machine sounds in the DCASE 2020 Task 2 layout.

`dsp.py` holds the signal primitives, `machines.py` the six machine models with their
faults and the factory noise, `generate.py` the data set writer.
"""
