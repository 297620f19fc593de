"""What a backbone's pretrained weights were trained on, read from timm's tag, and what that may
share with a benchmark's unseen classes.

The xlsa17 proposed splits (Xian et al., 2018, "Zero-shot learning: a comprehensive evaluation
of the good, the bad and the ugly", TPAMI) choose the unseen classes of CUB, SUN and AWA2 so
that none is among the 1000 ImageNet-1k classes, and no further: weights pretrained on
ImageNet-21k/22k/12k, LVD-142M (DINOv2) or web image-text sets (CLIP: OpenAI's WIT-400M,
LAION-2B, DataComp, ...) may have seen them (docs/backbones.md: Pretraining overlap).
"""

from __future__ import annotations

# timm tag parts -> the data they name, beyond ImageNet-1k
BEYOND_IN1K = {
    "in21k": "ImageNet-21k", "in22k": "ImageNet-22k", "in12k": "ImageNet-12k",
    "lvd142m": "LVD-142M", "lvd1689m": "LVD-1689M", "laion2b": "LAION-2B",
    "laion400m": "LAION-400M", "openai": "OpenAI CLIP (WIT-400M)", "dfn2b": "DFN-2B",
    "dfn5b": "DFN-5B", "datacomp1b": "DataComp-1B", "datacompxl": "DataComp-XL",
    "webli": "WebLI", "merged2b": "Merged-2B (LAION-2B + COYO)", "ig1b": "Instagram-1B",
    "ig": "Instagram", "swsl": "Instagram (semi-weakly supervised)", "ssl": "YFCC-100M",
    "metaclip": "MetaCLIP", "mim": "ImageNet-22k (masked image modelling)",
}
ZSL_BENCHMARKS = ("cub", "sun", "awa2")


def pretraining_data(name: str) -> list[str] | None:
    """The data beyond ImageNet-1k a tagged timm name was pretrained on; ``[]``: ImageNet-1k
    only; None: the tag does not say (no tag, or no data named in it)."""
    if "." not in name:
        return None
    parts = name.split(".", 1)[1].split("_")
    beyond = [BEYOND_IN1K[p] for p in parts if p in BEYOND_IN1K]
    if beyond:
        return list(dict.fromkeys(beyond))
    return [] if "in1k" in parts else None


def overlap_warning(name: str, dataset: str, pretrained: bool) -> str | None:
    """One line for the log when ``name``'s weights may have seen ``dataset``'s unseen classes."""
    if not pretrained or dataset not in ZSL_BENCHMARKS:
        return None
    data = pretraining_data(name)
    if data == []:
        return None
    said = (f"were pretrained beyond ImageNet-1k ({', '.join(data)})" if data else
            "are not known to be pretrained on ImageNet-1k alone")
    return (f"backbone weights '{name}' {said}: the xlsa17 proposed splits keep {dataset}'s "
            f"unseen classes out of ImageNet-1k only, so pretraining may have seen them; report "
            f"the figures as such (docs/backbones.md: Pretraining overlap)")
