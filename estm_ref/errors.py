"""The project's two error types, mapped to exit codes in one place (`estm_ref.cli.main`).

`InputError` (a ValueError): bad input (a file, a flag, a run folder, a data root): a
one-line message and exit code 2. `TrainingError`: a run that cannot go on (non-finite
loss, failed kernel parity check, a run folder that already holds a run): the message and
exit code 1.
"""


class InputError(ValueError):
    """Bad input from the user: the message names what is wrong and, where it helps, the fix."""


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, failed parity check, a run folder in use)."""
