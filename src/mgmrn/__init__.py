"""Mg-MRN: Multi-Granularity Mutual Refinement Network for zero-shot image classification."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``mgmrn.load`` on first use, so that ``import mgmrn`` stays light (no torch)."""
    if name == "load":
        from mgmrn.inference.predictor import load

        return load
    raise AttributeError(f"module 'mgmrn' has no attribute {name!r}")
