"""process_map: tasks in worker processes, results in task order."""

import operator

import pytest

from estm_ref.processes import process_map


@pytest.mark.parametrize("jobs", [1, 2])
def test_results_come_in_task_order(jobs):
    tasks = [(1, 2), (30, 4), (500, 6), (7000, 8)]
    assert list(process_map(operator.add, tasks, jobs)) == [3, 34, 506, 7008]


def test_jobs_below_one_are_refused():
    with pytest.raises(ValueError, match="jobs"):
        list(process_map(operator.add, [(1, 2)], 0))
