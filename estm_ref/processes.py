"""Run independent tasks in worker processes, for the CPU-bound work that has no GPU path:
rendering synthetic clips and training the baseline autoencoders.

    for result in process_map(fn, [(a1, b1), (a2, b2)], jobs=2):  # fn(a1, b1), fn(a2, b2)

Workers are spawned (not forked), so a script that calls this with jobs > 1 needs the
usual `if __name__ == "__main__":` guard; state patched into modules at run time does not
reach them. With jobs == 1 everything runs in this process.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")


def process_map(fn: Callable[..., T], tasks: Iterable[tuple], jobs: int) -> Iterator[T]:
    """fn(*task) for every task, in task order; `jobs` worker processes when > 1."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if jobs == 1:
        for task in tasks:
            yield fn(*task)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(fn, *task) for task in tasks]
        for future in futures:
            yield future.result()
