"""Fused Triton kernels (imported lazily: the rest of the project runs without Triton)."""
