"""Test setup. Without CUDA, Triton kernels run on CPU tensors through the interpreter.

TRITON_INTERPRET must be set before any `@triton.jit` function is defined, so it is set
here, before test modules import the kernels.
"""

import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

# the device the Triton kernel runs on in this test session
KERNEL_DEVICE = "cuda" if HAS_CUDA else "cpu"


def triton_scan(block_d=None, block_l=None, poison=True):
    """The Triton scan with NaN-poisoned buffers (a forgotten store shows as NaN) and, if
    given, explicit block sizes; None: the configuration chosen by shape."""
    import functools

    from triton_kernels.selective_scan import LaunchOptions, ScanConfig, selective_scan_fn

    config = ScanConfig(block_d, block_l) if block_d else None
    return functools.partial(selective_scan_fn, options=LaunchOptions(config=config, poison=poison))


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device; none is visible (torch.cuda.is_available() is False)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # not keywords: they hold folder names
            item.add_marker(skip_gpu)


# ----------------------------------------------------------------------------- tiny data and runs
# Shared by the integration tests, made once per test process. Tests must not write into
# the folders these fixtures return: copy what they need to change.

# the synthetic set: 2 types x 2 IDs, 4 training and 4 test clips per ID, 1 s clips
TINY_DATA = {"seed": 3, "types": ["fan", "slider"], "ids_per_type": 2, "train_per_id": 4,
             "test_per_id": 4, "duration_s": 1.0}
TINY_IDS = len(TINY_DATA["types"]) * TINY_DATA["ids_per_type"]
TINY_TRAIN_CLIPS = TINY_IDS * TINY_DATA["train_per_id"]

# a small model on the reference scan, for speed; flags beside them (a preset) still apply
TINY_TRAIN = ["--d-model", "32", "--depth", "1", "--d-state", "8", "--scan-backend", "ref",
              "--batch-size", "8", "--lr", "1e-3", "--no-cache-audio", "--no-progress",
              "--clip-samples", "16000"]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    pytest.importorskip("soundfile", reason="the synthetic set is written as WAV files")
    from estm_ref.synth.generate import generate

    root = tmp_path_factory.mktemp("tiny-data")
    generate(root, progress=False, **TINY_DATA)
    return root


@pytest.fixture(scope="session")
def tiny_run(tiny_data, tmp_path_factory):
    """One run trained for 2 epochs on `tiny_data`, for the tests that only read a run."""
    from estm_ref.cli.main import main

    run_dir = tmp_path_factory.mktemp("tiny-run")
    assert main(["--quiet", "train", "--data-root", str(tiny_data), "--out", str(run_dir),
                 "--force", "--epochs", "2", *TINY_TRAIN]) == 0
    return run_dir


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """`estm demo --tiny` run once: (exit code, what it printed, run_demo's result)."""
    import contextlib
    import io

    from estm_ref.cli.main import main
    from estm_ref.pipeline import demo

    results, run_demo = [], demo.run_demo

    def keep(*args, **kwargs):  # the CLI prints the table; the tests also read the result
        results.append(run_demo(*args, **kwargs))
        return results[-1]

    out = tmp_path_factory.mktemp("tiny-demo")
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setattr(demo, "run_demo", keep)
        code = main(["--quiet", "demo", "--tiny", "--out", str(out), "--no-progress"])
    return code, printed.getvalue(), results[0] if results else None
