"""Sharing a trained network outside mgmrn's own checkpoints: a model folder in the Hugging Face
Hub's format with its model card (:mod:`.hub`), and an ONNX graph that takes the classes as an
input (:mod:`.onnx`)."""

from mgmrn.errors import MgmrnError


class ExportError(MgmrnError, ValueError):
    """An export that cannot be made; the message names what and why."""
