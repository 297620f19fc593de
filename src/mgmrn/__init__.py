"""Mg-MRN: Multi-Granularity Mutual Refinement Network for zero-shot image classification."""

__version__ = "0.1.0"
