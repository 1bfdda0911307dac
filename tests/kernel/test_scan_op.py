"""The scan as registered PyTorch operators, and torch.compile through a Mamba block.

`torch.library.opcheck` checks the operators' schemas, fake (meta) implementations,
autograd registration and tracing on CPU, where they run the reference. A compiled Mamba
block (`fullgraph=True`: a graph break fails) must match the eager block in its output
and in the gradient of every parameter.
"""

import pytest
import torch

from estm_ref.config import ModelConfig
from estm_ref.model.mamba import MambaBlock
from estm_ref.scan import selective_scan
from estm_ref.scan.op import selective_scan_bwd, selective_scan_fwd, selective_scan_op
from estm_ref.scan.parity import ScanCase, assert_parity, make_inputs, tolerance

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")
NONE = dict(has_D=False, has_z=False, has_delta_bias=False, delta_softplus=False, has_initial_state=False)


def _op_args(case):
    x = make_inputs(case, "cpu")
    if case.groups == 0:
        x["B"], x["C"] = x["B"][:, None], x["C"][:, None]
    return [x[k] for k in NAMES]


@pytest.mark.slow  # opcheck traces the operators in every mode it knows: about a minute
@pytest.mark.parametrize("case", [ScanCase(1, 4, 6, 3, groups=2), ScanCase(2, 3, 5, 2, **NONE)],
                         ids=["everything", "nothing-optional"])
def test_opcheck(case):
    args = _op_args(case)
    torch.library.opcheck(selective_scan_fwd, (*args, case.delta_softplus, False))
    torch.library.opcheck(selective_scan_fwd, (*args, case.delta_softplus, True))
    y, last_state, tile_states = selective_scan_fwd(*args, case.delta_softplus, True)
    torch.library.opcheck(selective_scan_bwd, (*args, tile_states, torch.randn_like(y),
                                               torch.randn_like(last_state), case.delta_softplus))


@pytest.mark.parametrize("case", [ScanCase(2, 6, 40, 4, groups=2), ScanCase(1, 4, 7, 3, **NONE),
                                  ScanCase(2, 4, 9, 4, dtype=torch.bfloat16, big_delta=True)],
                         ids=["several-tiles-groups", "nothing-optional", "bf16-above-softplus-threshold"])
def test_operator_matches_the_reference(case):
    """On CPU the operators run the reference forward (tile by tile) and its written-out backward."""
    assert_parity(selective_scan_op, case, "cpu")


def test_auto_backend_goes_through_the_operator():
    x = make_inputs(ScanCase(1, 2, 3, 2), "cpu")
    graph_ops = []

    def record(gm, example_inputs):
        graph_ops.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm

    torch.compile(lambda: selective_scan(**x, backend="auto"), backend=record, fullgraph=True)()
    assert "estm_ref.selective_scan_fwd.default" in graph_ops


def _block_and_input(seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(d_model=16, d_state=4, expand=2, scan_backend="auto")
    block = MambaBlock(cfg)
    return block, torch.randn(2, 6, 16, requires_grad=True)


def _run(block, module, x):
    out = module(x)
    out.pow(2).mean().backward()
    grads = {name: p.grad.clone() for name, p in block.named_parameters()}
    return out.detach(), x.grad.clone(), grads


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_mamba_block_matches_eager(backend):
    block, x = _block_and_input()
    expected = _run(block, block, x)
    block.zero_grad()
    x.grad = None
    out, dx, grads = _run(block, torch.compile(block, backend=backend, fullgraph=True), x)
    torch.testing.assert_close(out, expected[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dx, expected[1], rtol=1e-5, atol=1e-6)
    assert set(grads) == set(expected[2])
    for name, g in grads.items():
        torch.testing.assert_close(g, expected[2][name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.gpu
def test_operator_on_cuda_matches_the_reference():
    """On CUDA the operators launch the Triton kernels through wrap_triton."""
    assert_parity(selective_scan_op, ScanCase(2, 256, 300, 16, groups=2, dtype=torch.bfloat16), "cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_mamba_block_on_cuda_matches_eager(backend):
    block, x = _block_and_input()
    block, x = block.cuda(), x.detach().cuda().requires_grad_()
    expected = _run(block, block, x)
    block.zero_grad()
    x.grad = None
    out, dx, grads = _run(block, torch.compile(block, backend=backend, fullgraph=True), x)
    rtol, atol = tolerance(torch.float32, "cuda")
    torch.testing.assert_close(out, expected[0], rtol=rtol, atol=atol)
    torch.testing.assert_close(dx, expected[1], rtol=rtol, atol=atol)
    for name, g in grads.items():
        torch.testing.assert_close(g, expected[2][name], rtol=rtol, atol=atol, msg=name)
