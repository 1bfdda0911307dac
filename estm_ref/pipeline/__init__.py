"""The work a user asks for: train, score, test, demo, ablation; the run folder and metrics."""
