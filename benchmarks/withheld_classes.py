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

from mgmrn.inference.inputs import expand_inputs
from mgmrn.inference.predictor import load

# (classes searched, gamma): None takes the checkpoint's gamma; "all" also uncalibrated
SEARCHES = (("added", None), ("added,unseen", None), ("all", None), ("all", 0.0))


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
              "images": sum(len(v) for v in images.values()), "searches": []}
    for search, gamma in SEARCHES:
        candidates = predictor.candidates(search)
        per_class = {}
        for name, paths in images.items():
            found = predictor.predict(paths, top_k=1, classes=search, top_attributes=0,
                                      gamma=gamma)
            per_class[name] = float(np.mean([r["classes"][0]["name"] == name for r in found]))
        calibration = predictor.calibration(candidates, gamma)
        report["searches"].append({
            "classes": search, "classes_searched": len(candidates), "chance": 1.0 / len(candidates),
            "top1_mean_per_class": float(np.mean(list(per_class.values()))),
            "per_class": per_class, "calibration": calibration})
    print(f"{'searched':<14}{'classes':>8}{'chance %':>10}{'top-1 %':>9}   gamma (source)")
    for r in report["searches"]:
        print(f"{r['classes']:<14}{r['classes_searched']:>8}{100 * r['chance']:>10.1f}"
              f"{100 * r['top1_mean_per_class']:>9.1f}   {r['calibration']['gamma']:.2f} "
              f"({r['calibration']['source']})")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
