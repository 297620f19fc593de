"""Rank an image among classes given by their attributes, with an ONNX export of mgmrn.

Needs numpy, onnxruntime and Pillow only (no torch, no mgmrn):

    mgmrn export --format onnx --checkpoint runs/parts-pretrained/checkpoints/best.pt --out model.onnx
    python examples/onnx_predict.py model.onnx photo.jpg                   # the trained classes
    python examples/onnx_predict.py model.onnx photo.jpg --classes new.csv # classes from a CSV
    python examples/onnx_predict.py model.onnx photo.jpg --classes new.csv --with-trained

``new.csv`` has a ``class`` column and one column per attribute of the export, by name, in any
order (as ``mgmrn predict --add-classes``). The preprocessing and the calibration (gamma,
subtracted from the seen classes' scores when they are ranked with others) come from the
export's sidecar, ``model.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST,
            "lanczos": Image.LANCZOS}


def preprocess(path: str | Path, spec: dict) -> np.ndarray:
    """An image file -> (1, 3, S, S) float32: shorter side resized, centre crop, normalised."""
    image = Image.open(path).convert("RGB")
    width, height = image.size
    short = spec["resize"]  # the shorter side; the longer keeps the aspect ratio, rounded down
    size = (short, int(short * height / width)) if width <= height else \
        (int(short * width / height), short)
    image = image.resize(size, RESAMPLE.get(spec["interpolation"], Image.BILINEAR))
    crop = spec["crop"]
    left = int(round((image.width - crop) / 2.0))
    top = int(round((image.height - crop) / 2.0))
    image = image.crop((left, top, left + crop, top + crop))
    pixels = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
    mean = np.asarray(spec["mean"], dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(spec["std"], dtype=np.float32).reshape(3, 1, 1)
    return ((pixels - mean) / std)[None]


def read_classes(path: str | Path, attribute_names: list[str]) -> tuple[list[str], np.ndarray]:
    """Class names and their (N, A) attribute rows, columns by name."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    if not rows or "class" not in rows[0]:
        sys.exit(f"{path}: needs a 'class' column and one column per attribute")
    missing = [a for a in attribute_names if a not in rows[0]]
    if missing:
        sys.exit(f"{path}: attribute columns missing: {', '.join(missing[:5])}")
    return ([r["class"] for r in rows],
            np.asarray([[float(r[a]) for a in attribute_names] for r in rows], dtype=np.float32))


def rank(session: ort.InferenceSession, sidecar: dict, image: np.ndarray, names: list[str],
         attributes: np.ndarray, seen: list[bool], gamma: float) -> list[tuple[str, float]]:
    """Classes by calibrated score, best first."""
    scores = session.run(["class_scores"], {"images": image, "class_attributes": attributes})[0][0]
    if any(seen) and not all(seen):  # calibrated stacking, as mgmrn predict applies it
        scores = scores - gamma * np.asarray(seen, dtype=np.float32)
    order = np.argsort(-scores, kind="stable")
    return [(names[i], float(scores[i])) for i in order]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", help="the .onnx file; its sidecar .json lies next to it")
    p.add_argument("image")
    p.add_argument("--classes", default=None, metavar="CSV",
                   help="classes to rank by their attributes (default: the trained classes)")
    p.add_argument("--with-trained", action="store_true",
                   help="rank the CSV's classes together with the trained classes")
    p.add_argument("--gamma", type=float, default=None, help="calibration (default: the export's)")
    p.add_argument("--top-k", type=int, default=5)
    args = p.parse_args(argv)
    sidecar = json.loads(Path(args.model).with_suffix(".json").read_text())
    trained = sidecar["class_names"]
    seen_names = {trained[i] for i in sidecar["seen_classes"]}
    names, attributes = [], np.zeros((0, len(sidecar["attribute_names"])), np.float32)
    if args.classes is None or args.with_trained:
        names, attributes = list(trained), np.asarray(sidecar["class_attributes"], np.float32)
    if args.classes is not None:
        new_names, rows = read_classes(args.classes, sidecar["attribute_names"])
        names, attributes = names + new_names, np.concatenate([attributes, rows])
    gamma = sidecar["calibration"]["gamma"] if args.gamma is None else args.gamma
    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    ranked = rank(session, sidecar, preprocess(args.image, sidecar["preprocessing"]), names,
                  attributes, [n in seen_names for n in names], gamma)
    for place, (name, score) in enumerate(ranked[:args.top_k], start=1):
        print(f"{place:>2}. {name}  {score:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
