"""`estm model-summary`: the shape after every stage and parameter counts of an ESTM model."""

from __future__ import annotations

import argparse

from estm_ref.config import CLS_POSITIONS, FEATURE_SETS, PATHS, FeatureConfig, ModelConfig
from estm_ref.model.summary import format_summary, model_summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    model_defaults, feature_defaults = ModelConfig(), FeatureConfig()
    parser.add_argument("--paths", choices=PATHS, default=model_defaults.paths)
    parser.add_argument("--features", choices=FEATURE_SETS, default=feature_defaults.features)
    parser.add_argument("--d-model", type=int, default=model_defaults.d_model)
    parser.add_argument("--depth", type=int, default=model_defaults.depth)
    parser.add_argument("--d-state", type=int, default=model_defaults.d_state)
    parser.add_argument("--cls-position", choices=CLS_POSITIONS, default=model_defaults.cls_position)
    parser.add_argument("--bidirectional", action="store_true")
    parser.add_argument("--n-classes", type=int, default=41)


def run(args: argparse.Namespace) -> int:
    feature_cfg = FeatureConfig(features=args.features)
    model_cfg = ModelConfig(d_model=args.d_model, depth=args.depth, d_state=args.d_state, paths=args.paths,
                            cls_position=args.cls_position, bidirectional=args.bidirectional)
    print(format_summary(model_summary(feature_cfg, model_cfg, args.n_classes)))
    return 0
