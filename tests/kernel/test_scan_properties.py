"""Properties of the selective scan that hold for any shape, checked with Hypothesis on
the reference and on the Triton kernel.

The properties themselves (`estm_ref.scan.properties`) and the case strategy
(`estm_ref.scan.testing.scan_cases`) are the ones any scan is checked with; here the
kernel also draws its block sizes from a small fixed set, so that on a GPU it compiles a
handful of variants rather than one per example. Shapes stay small: under the interpreter
every element of every tile's associative scan costs Python time.
"""


import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import KERNEL_DEVICE, triton_scan
from estm_ref.scan import properties, selective_scan_ref
from estm_ref.scan.parity import ScanCase, assert_parity
from estm_ref.scan.testing import scan_cases


SCANS = {"ref": lambda blocks: selective_scan_ref, "triton": lambda blocks: triton_scan(*blocks)}
PROPERTY = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
blocks = st.tuples(st.sampled_from((2, 16)), st.sampled_from((2, 4, 8)))  # (BLOCK_D, BLOCK_L)
seeds = st.integers(0, 2**16)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SCANS))
@PROPERTY
@given(case=scan_cases(min_L=2), data=st.data(), blocks=blocks, seed=seeds)
def test_scan_in_two_pieces_equals_one_scan(name, case, data, blocks, seed):
    split = data.draw(st.integers(1, case.L - 1), label="split")
    properties.two_pieces_equal_one(SCANS[name](blocks), case, split, seed, KERNEL_DEVICE)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SCANS))
@PROPERTY
@given(case=scan_cases(), blocks=blocks, seed=seeds)
@example(case=ScanCase(1, 3, 5, 4, has_D=False, has_z=False), blocks=(2, 4), seed=0)
def test_D_and_z_act_pointwise(name, case, blocks, seed):
    properties.D_and_z_act_pointwise(SCANS[name](blocks), case, seed, KERNEL_DEVICE)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SCANS))
@PROPERTY
@given(case=scan_cases(), blocks=blocks, seed=seeds)
def test_very_negative_A_forgets_the_past(name, case, blocks, seed):
    properties.negative_A_forgets(SCANS[name](blocks), case, seed, KERNEL_DEVICE)


@pytest.mark.slow
@PROPERTY
@given(case=scan_cases(), blocks=blocks, seed=seeds,
       low_precision=st.sampled_from([None, torch.bfloat16, torch.float16]))
@example(case=ScanCase(1, 1, 1, 1), blocks=(16, 8), seed=0, low_precision=None)
def test_poisoned_buffers_are_overwritten_and_match_the_reference(case, blocks, seed, low_precision):
    if low_precision is not None:
        case = ScanCase(**{**case.__dict__, "dtype": low_precision})
    # non-finite values fail the comparison, so a NaN left in any buffer is caught here
    assert_parity(triton_scan(*blocks), case, KERNEL_DEVICE, seed)
