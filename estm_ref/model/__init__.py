"""The ESTM model: `features` (log-mel, TSG, Tgram), `patching`, `mamba` (the Mamba block
on the selective scan), `estm` (paths, fusion, ArcFace, the own-class -log p), `summary`."""

from estm_ref.model.estm import ESTM, ArcFace, ESTMOutput, MambaPath, build_model, own_class_nll

__all__ = ["ESTM", "ArcFace", "ESTMOutput", "MambaPath", "build_model", "own_class_nll"]
