"""`estm model-summary`: shapes and parameter counts against hand-computed values."""

import argparse
import math

from estm_ref.cli import model_summary as model_summary_cli
from estm_ref.model import summary
from estm_ref.cli.main import COMMANDS
from estm_ref.config import FeatureConfig, ModelConfig


def block_params(d_model, d_state=16, expand=2, d_conv=4, bidirectional=False):
    E, R = expand * d_model, math.ceil(d_model / 16)
    ssm = (E * d_conv + E) + E * (R + 2 * d_state) + (R * E + E) + E * d_state + E
    return 2 * d_model + d_model * 2 * E + ssm * (2 if bidirectional else 1) + E * d_model


TGRAM = 128 * 1024 + 3 * (2 * 313 + 128 * 128 * 3)


def expected_total(channels, d_model, depth, n_classes, paths="both", bidirectional=False):
    total = TGRAM + n_classes * d_model
    path = depth * block_params(d_model, bidirectional=bidirectional) + 2 * d_model + d_model * d_model + d_model
    if paths in ("both", "temporal"):
        total += path + (channels * 128 * 26 + 1) * d_model + 13 * d_model + d_model
    if paths in ("both", "spectral"):
        total += path + (channels * 8 * 312 + 1) * d_model + 17 * d_model + d_model
    return total


def test_default_summary():
    s = summary.model_summary(FeatureConfig(), ModelConfig(), 41)
    stages = dict(s["stages"])
    assert stages["waveform"] == (1, 160000)
    assert stages["log-mel"] == stages["EMel (TSG)"] == stages["Tgram"] == (1, 128, 313)
    assert stages["ESTgram (Mel, EMel, Tgram)"] == (1, 3, 128, 313)
    assert stages["tmamba patches"] == (1, 12, 9984) and stages["smamba patches"] == (1, 16, 7488)
    assert stages["tmamba tokens"] == stages["tmamba block 4"] == (1, 13, 128)
    assert stages["smamba tokens"] == stages["smamba block 4"] == (1, 17, 128)
    assert stages["tmamba class-token output"] == stages["fused embedding H"] == (1, 128)
    assert stages["logits"] == (1, 41)
    params = dict(s["params"])
    assert params["tgram"] == TGRAM == 280406
    assert params["tmamba.blocks (4 x 116,736)"] == 4 * block_params(128) == 4 * 116736
    assert params["tmamba.patch_embed"] == 9985 * 128 and params["smamba.patch_embed"] == 7489 * 128
    assert params["align_s"] == params["align_t"] == 128 * 129 and params["head"] == 41 * 128
    assert s["total"] == sum(params.values()) == expected_total(3, 128, 4, 41) == 3493846


def test_small_single_path_summary_via_cli_arguments(capsys):
    assert COMMANDS["model-summary"][0] == "estm_ref.cli.model_summary"
    parser = argparse.ArgumentParser()
    model_summary_cli.add_arguments(parser)
    args = parser.parse_args(["--paths", "temporal", "--features", "stgram", "--d-model", "32",
                              "--depth", "2", "--bidirectional", "--n-classes", "5"])
    assert model_summary_cli.run(args) == 0
    printed = capsys.readouterr().out
    total = expected_total(2, 32, 2, 5, paths="temporal", bidirectional=True)
    assert f"{total:,}" in printed and "smamba" not in printed
    assert "STgram (Mel, Tgram)                 1 x 2 x 128 x 313" in printed
    assert "tmamba block 2                      1 x 13 x 32" in printed
