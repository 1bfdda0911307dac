"""The named cases every selective scan is checked on: one table for `estm scan-check`,
`estm_ref.scan.testing` and the project's own kernel tests.

Each entry covers one thing a scan can get wrong: N = 1, odd and large N; L = 1, L that
is a multiple of no tile size, long L; shared and grouped B/C (one channel per group
too); initial state on and off; delta above softplus's threshold; D, z and delta_bias
each present and absent; non-contiguous inputs; batch 1; float32, bfloat16, float16 and
mixed input dtypes.

`tiny` cases are small enough for the Triton interpreter (a few programs, short L, small
N) and are also compared with a float64 run of the reference. `quick` cases make up
`--quick`: every tiny case plus one each of large N and long L, under a minute on a CPU.
The rest run in the full battery only. `determinism` cases are run twice and must give
bit-identical gradients.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import torch

from estm_ref.scan.parity import ScanCase

bf16, fp16, fp32 = torch.bfloat16, torch.float16, torch.float32
NONE = dict(has_D=False, has_z=False, has_delta_bias=False, delta_softplus=False, has_initial_state=False)


@dataclass(frozen=True)
class BatteryCase:
    name: str
    case: ScanCase
    size: str = "tiny"  # "tiny" (interpreter-sized, float64-checked), "quick" or "full"
    determinism: bool = False

    @property
    def tiny(self) -> bool:
        return self.size == "tiny"

    @property
    def quick(self) -> bool:
        return self.size in ("tiny", "quick")


def _battery(*cases: BatteryCase) -> dict[str, BatteryCase]:
    table = {c.name: c for c in cases}
    assert len(table) == len(cases), "battery case names must be unique"
    return table


BATTERY: dict[str, BatteryCase] = _battery(
    BatteryCase("L1-batch1", ScanCase(1, 3, 1, 4)),
    BatteryCase("N1-nothing-optional", ScanCase(2, 5, 7, 1, **NONE)),
    BatteryCase("N-odd", ScanCase(2, 4, 9, 5, has_initial_state=False)),
    BatteryCase("groups-L-prime", ScanCase(1, 10, 23, 16, groups=2)),
    BatteryCase("one-channel-per-group", ScanCase(2, 6, 13, 4, groups=6, has_z=False), determinism=True),
    BatteryCase("z-only", ScanCase(1, 7, 17, 4, **{**NONE, "has_z": True})),
    BatteryCase("D-only", ScanCase(1, 7, 9, 4, **{**NONE, "has_D": True})),
    BatteryCase("bias-without-softplus", ScanCase(2, 4, 11, 4, **{**NONE, "has_delta_bias": True})),
    BatteryCase("initial-state-only", ScanCase(1, 4, 10, 16, **{**NONE, "has_initial_state": True})),
    BatteryCase("softplus-above-threshold", ScanCase(1, 6, 12, 4, big_delta=True)),
    BatteryCase("L-power-of-two-groups", ScanCase(1, 8, 16, 4, groups=2)),
    BatteryCase("estm-time-path", ScanCase(2, 8, 13, 16), determinism=True),
    BatteryCase("L40-shared", ScanCase(1, 4, 40, 4)),
    BatteryCase("noncontiguous", ScanCase(1, 5, 9, 4, groups=1, noncontiguous=True)),
    BatteryCase("bf16-groups", ScanCase(2, 8, 20, 16, groups=2, dtype=bf16)),
    BatteryCase("fp16", ScanCase(1, 6, 15, 4, dtype=fp16, has_initial_state=False)),
    BatteryCase("mixed-dtypes", ScanCase(1, 6, 10, 4, dtype=fp16, delta_dtype=fp32, bc_dtype=bf16)),
    BatteryCase("N-large", ScanCase(1, 4, 33, 64, groups=2), size="quick"),
    BatteryCase("L-long", ScanCase(1, 8, 1000, 16), size="quick", determinism=True),
    BatteryCase("bf16-L-long", ScanCase(1, 8, 777, 16, groups=4, dtype=bf16), size="quick"),
    BatteryCase("N-256", ScanCase(1, 16, 300, 256), size="full"),
    BatteryCase("L-4099-groups", ScanCase(2, 64, 4099, 16, groups=4), size="full", determinism=True),
    BatteryCase("bf16-estm-block", ScanCase(8, 256, 17, 16, dtype=bf16), size="full"),
    BatteryCase("fp16-L-long-noncontiguous", ScanCase(1, 32, 2048, 16, dtype=fp16, noncontiguous=True),
                size="full"),
    BatteryCase("mixed-L-long-no-softplus", ScanCase(2, 32, 1500, 8, groups=2, delta_softplus=False,
                                                     dtype=bf16, delta_dtype=fp32, bc_dtype=fp16),
                size="full"),
)

TINY = [name for name, c in BATTERY.items() if c.tiny]
QUICK = [name for name, c in BATTERY.items() if c.quick]


def select(quick: bool = False, patterns: list[str] | None = None) -> list[BatteryCase]:
    """The cases of the full (or quick) battery, kept to the names matching `patterns` (shell
    wildcards, e.g. "bf16*") when given. A pattern that matches no case raises KeyError."""
    if patterns is not None:
        unmatched = [p for p in patterns if not fnmatch.filter(BATTERY, p)]
        if unmatched:
            raise KeyError(f"no case matches {', '.join(unmatched)}; the battery has {', '.join(BATTERY)}")
    return [c for c in BATTERY.values() if (not quick or c.quick)
            and (patterns is None or any(fnmatch.fnmatchcase(c.name, p) for p in patterns))]
