"""``mgmrn export --format onnx``: the network as an ONNX graph that takes the classes as an input.

The graph's inputs are a batch of normalised images (B, 3, S, S) and a class-attribute matrix
(C, A), both with a dynamic first dimension: since the cosine classifier scores any attribute
vector, classes added after training need no Python, only their row. Its outputs are the class
scores (B, C) (per-level tau-scaled cosines summed over levels, as :class:`~mgmrn.models.ZSLOutput`'s
``logits``), the attribute scores (B, A) (mean over levels) and, for Mg-MRN, each level's
attention maps (B, A, h, w) folded onto that level's grid. A JSON sidecar next to the graph holds
what running it needs besides: class and attribute names, the trained classes' attributes, the
preprocessing and the calibration (see ``examples/onnx_predict.py``).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
from pathlib import Path

import torch
from torch import nn

from mgmrn.export import ExportError
from mgmrn.inference.loaded import LoadedRun
from mgmrn.io.atomic import write_atomic
from mgmrn.models.mgmrn import spatial_attention

log = logging.getLogger(__name__)

INPUTS = ("images", "class_attributes")
OPSET = 18
# a protobuf file holds up to 2 GiB: weights above this go to a data file beside the graph
EXTERNAL_DATA_BYTES = 2**30


class ScoringGraph(nn.Module):
    """What the ONNX graph computes: a network's forward pass with its outputs as a tuple.

    Args:
        model: Mg-MRN or the baseline, in eval mode.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.attention = bool(getattr(model, "has_attention", False))

    def output_names(self) -> list[str]:
        names = ["class_scores", "attribute_scores"]
        return names + ([f"attention_{level}" for level in self.model.levels]
                        if self.attention else [])

    def forward(self, images: torch.Tensor, class_attributes: torch.Tensor):
        """images: (B, 3, S, S) normalised; class_attributes: (C, A) -> class scores (B, C),
        attribute scores (B, A) and, with attention, one (B, A, h, w) map per level."""
        out = self.model(images, class_attributes, return_attention=self.attention)
        scores = (out.logits, torch.stack(out.attribute_scores).mean(0))
        if not self.attention:
            return scores
        return scores + tuple(spatial_attention(a, layout, parts) for a, layout, parts
                              in zip(out.attention, out.layouts, out.assignments, strict=True))


def export_onnx(checkpoint: str | Path, out: str | Path, opset: int = OPSET) -> tuple[Path, Path]:
    """Write the ONNX graph of ``checkpoint`` to ``out`` and its sidecar to ``out`` with
    ``.json``; returns both paths.

    Raises:
        ExportError: the exporter is missing (``pip install mgmrn[export]``) or the network's
            backbone cannot be traced (named in the message).
    """
    try:
        import onnx  # noqa: F401  the exporter writes through it
        import onnxscript  # noqa: F401  torch's exporter translates the graph with it
    except ImportError as err:
        raise ExportError(f"ONNX export needs the export extra ({err.name} is missing): "
                          f"pip install 'mgmrn[export]'") from err
    run = LoadedRun.from_checkpoint(checkpoint, "cpu", purpose="predict")
    graph = ScoringGraph(run.model).eval()
    size = run.config.data.image_size
    attributes = run.description["class_attributes"].float()
    # two images and the trained classes: the sizes only shape the trace, both dimensions stay free
    example = (torch.zeros(2, 3, size, size), attributes)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    batch, classes = torch.export.Dim("batch"), torch.export.Dim("classes")
    weights = sum(t.numel() * t.element_size() for t in run.model.state_dict().values())
    external = weights > EXTERNAL_DATA_BYTES
    chatter = io.StringIO()  # the exporter's progress lines and graph dumps: kept for --verbose
    try:
        with torch.no_grad(), contextlib.redirect_stdout(chatter), \
                contextlib.redirect_stderr(chatter), _quiet("onnxscript", "onnx_ir"):
            torch.onnx.export(graph, example, str(out), input_names=list(INPUTS),
                              output_names=graph.output_names(), opset_version=opset,
                              dynamo=True, external_data=external, verbose=False,
                              dynamic_shapes={"images": {0: batch},
                                              "class_attributes": {0: classes}})
    except OSError:  # the file could not be written: not the tracer's doing
        raise
    except Exception as err:
        log.debug("the exporter said:\n%s", chatter.getvalue())
        raise ExportError(f"backbone '{run.config.model.backbone}' of this {run.config.model.name} "
                          f"network cannot be traced for ONNX ({_first_line(err)}); export a "
                          f"network on another backbone, or use the PyTorch checkpoint") from err
    difference = check_against_pytorch(out, graph, size, attributes)
    if difference is not None:
        log.info("onnxruntime agrees with PyTorch to %.2g (largest difference of any output)",
                 difference)
    sidecar = out.with_suffix(".json")
    write_atomic(sidecar, json.dumps(sidecar_content(run, graph), indent=1) + "\n")
    log.info("ONNX graph written to %s, its sidecar to %s", out, sidecar)
    return out, sidecar


def check_against_pytorch(path: Path, graph: ScoringGraph, size: int,
                          class_attributes: torch.Tensor, tolerance: float = 1e-3) -> float | None:
    """Run the written graph in onnxruntime on three random images (another batch than the
    trace's) and compare every output with PyTorch's; None where onnxruntime is missing.

    Raises:
        ExportError: an output differs by more than ``tolerance``.
    """
    try:
        import onnxruntime
    except ImportError:
        log.info("onnxruntime is missing: the graph is not checked against PyTorch")
        return None
    images = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": images.numpy(),
                             "class_attributes": class_attributes.numpy()})
    with torch.no_grad():
        expected = graph(images, class_attributes)
    difference = max(float((torch.from_numpy(a) - b).abs().max()) for a, b in zip(got, expected,
                                                                                 strict=True))
    if not difference <= tolerance:
        raise ExportError(f"the ONNX graph written to '{path}' differs from PyTorch by "
                          f"{difference:.3g} (more than {tolerance:g}); it should not be used")
    return difference


def sidecar_content(run: LoadedRun, graph: ScoringGraph) -> dict:
    """What running the graph needs besides the graph: names, classes, preprocessing,
    calibration."""
    from mgmrn import __version__
    from mgmrn.data.transforms import input_stats, resize_size

    meta, cfg = run.description, run.config.data
    mean, std = input_stats(run.inputs)
    return {
        "mgmrn_version": __version__, "architecture": run.config.model.name,
        "backbone": run.config.model.backbone, "inputs": list(INPUTS),
        "outputs": graph.output_names(), "levels": list(run.model.levels),
        "class_names": list(meta["class_names"]),
        "attribute_names": list(meta["attribute_names"]),
        "class_attributes": meta["class_attributes"].float().tolist(),
        "seen_classes": meta["seen_classes"].tolist(),
        "unseen_classes": meta["unseen_classes"].tolist(),
        # the test transform: shorter side to resize, centre crop of image_size, then normalise
        "preprocessing": {
            "resize": resize_size(cfg.image_size) if cfg.test_resize == "ratio" else cfg.image_size,
            "crop": cfg.image_size, "mean": mean, "std": std,
            "interpolation": run.inputs.get("interpolation", "bilinear"),
            "layout": "RGB, (B, 3, H, W) float32: pixels / 255, minus mean, over std"},
        "calibration": {"gamma": run.gamma, "source": run.gamma_source,
                        "rule": "subtract gamma from the scores of seen classes when they are "
                                "ranked together with other classes"},
    }


@contextlib.contextmanager
def _quiet(*names: str):
    """The graph optimiser's loggers at WARNING: it logs every initializer it merges."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logging.WARNING, logger.getEffectiveLevel()))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _first_line(err: BaseException) -> str:
    """The first line of the innermost cause: the exporter wraps the tracer's own words."""
    while err.__cause__ is not None:
        err = err.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
