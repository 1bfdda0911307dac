"""ESTM reference implementation: dual-path spectral-temporal Mamba for anomalous sound detection."""

from estm_ref.scan import selective_scan, selective_scan_ref

__all__ = ["selective_scan", "selective_scan_ref"]
__version__ = "0.1.0"
