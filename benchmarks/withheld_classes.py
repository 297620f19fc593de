"""Top-1 accuracy on classes added after training, from their attribute rows alone.

Trains nothing: takes a checkpoint of a demo run drawn with ``data.demo.num_withheld`` (classes
kept out of the run entirely), adds the withheld classes from ``withheld/classes.csv`` exactly as
``mgmrn predict --add-classes`` does, and classifies every image of ``withheld/images/`` searching
the added classes alone, with the unseen ones, and with every class (calibrated with the
checkpoint's gamma). Prints a table and one JSON object.

    python benchmarks/withheld_classes.py --checkpoint runs/demo-withheld/checkpoints/last.pt \
        --withheld .cache/mgmrn/demo-withheld/withheld
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mgmrn.predict import expand_inputs, load

SEARCHES = ("added", "added,unseen", "all")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--withheld", required=True, help="the demo's withheld/ folder")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    folder = Path(args.withheld)
    predictor = load(args.checkpoint, args.device)
    added = predictor.add_classes_from_csv(folder / "classes.csv")
    names = [predictor.class_names[i] for i in added]
    images = {name: expand_inputs([folder / "images" / name]) for name in names}
    report = {"checkpoint": args.checkpoint, "added_classes": names,
              "images": sum(len(v) for v in images.values()), "searches": {}}
    for search in SEARCHES:
        candidates = len(predictor.candidates(search))
        per_class = {}
        for name, paths in images.items():
            found = predictor.predict(paths, top_k=1, classes=search, top_attributes=0)
            per_class[name] = float(np.mean([r["classes"][0]["name"] == name for r in found]))
        report["searches"][search] = {
            "classes_searched": candidates, "chance": 1.0 / candidates,
            "top1_mean_per_class": float(np.mean(list(per_class.values()))),
            "per_class": per_class,
            "gamma": predictor.calibration(predictor.candidates(search))["gamma"]}
    print(f"{'searched':<14}{'classes':>8}{'chance %':>10}{'top-1 %':>9}   gamma")
    for search, r in report["searches"].items():
        print(f"{search:<14}{r['classes_searched']:>8}{100 * r['chance']:>10.1f}"
              f"{100 * r['top1_mean_per_class']:>9.1f}   {r['gamma']:.2f}")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
