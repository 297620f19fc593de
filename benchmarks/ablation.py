"""Does each deviation from the published code earn its place? Train and compare on proxy sets.

For a proxy recipe (``demo`` or ``parts``) this trains, at one budget and for each seed:
the ``<proxy>-release`` recipe (every switch at the published value); that recipe with each single
switch flipped to mgmrn's default; and the plain ``<proxy>`` recipe (mgmrn's defaults). The test
resize only changes evaluation, so it is measured by evaluating the release run's checkpoint
again with ``data.test_resize=ratio``. Figures are the last epoch's, gamma chosen on the test set
(as the published code does), the same protocol for every row.

    python benchmarks/ablation.py --proxy demo --seeds 0 1
    python benchmarks/ablation.py --proxy parts --seeds 0 1 --table

Each run writes ``runs/ablation/<proxy>/<variant>-seed<k>/``, through submitit (``launch.py``:
``--launcher local`` here, ``slurm`` on a cluster, see docs/cluster.md); finished runs are not
redone and preempted ones resume, so the script can be stopped and started again. ``--table``
prints the markdown table (mean and half the range over seeds) and writes it with the raw figures
to ``runs/ablation/<proxy>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # launch.py, beside this file
import launch  # noqa: E402

# variant -> overrides on top of <proxy>-release; "ours" is the plain recipe
SWITCHES = {
    "release": [],
    "grouping=regions": ["model.grouping=regions"],
    "prototype_init=scaled": ["model.prototype_init=scaled"],
    "halving=mean": ["model.halving=mean"],
    "lr_step_at=end": ["train.lr_step_at=end"],
    "schedule=fused": ["train.schedule=fused"],
}
# choices of the demo recipes only (the benchmark recipes keep the published values): measured
# on request with --only
RECIPE_CHOICES = {
    "scaled_attention=true": ["model.scaled_attention=true"],
    "norm=batch": ["model.norm=batch"],
}
EVAL_ONLY = {"test_resize=ratio": ["data.test_resize=ratio"]}
FIGURES = ("czsl_acc", "gzsl_h", "ausuc")


def train_variant(proxy: str, variant: str, seed: int, budget: list[str], root: Path,
                  threads: int | None = None) -> launch.Command:
    """The training of one variant: done when its results.json exists, resumed from last.pt."""
    folder = root / f"{variant}-seed{seed}"
    recipe = proxy if variant == "ours" else f"{proxy}-release"
    overrides = [] if variant == "ours" else {**SWITCHES, **RECIPE_CHOICES}[variant]
    return launch.Command([sys.executable, "-m", "mgmrn", "train", "--config", recipe,
                           f"seed={seed}", f"output_dir={folder}", *budget, *overrides],
                          folder.with_suffix(".log"), folder / "results.json",
                          folder / "checkpoints" / "last.pt", threads)


def eval_variant(release_run: Path, variant: str, seed: int, root: Path) -> launch.Command:
    """Evaluating the release run's checkpoint with an evaluation-only switch flipped."""
    out = root / f"{variant}-seed{seed}" / "results.json"
    return launch.Command([sys.executable, "-m", "mgmrn", "eval", "--checkpoint",
                           str(release_run.parent / "checkpoints" / "last.pt"), "--out", str(out),
                           *EVAL_ONLY[variant]], out.parent.with_suffix(".log"), out)


def table(proxy: str, seeds: list[int], root: Path) -> str:
    variants = list(SWITCHES) + list(EVAL_ONLY) + list(RECIPE_CHOICES) + ["ours"]
    raw, lines = {}, []
    lines.append("| variant | " + " | ".join(f"{f} (mean ± half-range)" for f in FIGURES) + " |")
    lines.append("|---" * (len(FIGURES) + 1) + "|")
    for variant in variants:
        found = [root / f"{variant}-seed{s}" / "results.json" for s in seeds]
        results = [json.loads(p.read_text()) for p in found if p.is_file()]
        if not results:
            continue
        raw[variant] = {f: [r[f] for r in results] for f in FIGURES}
        cells = []
        for f in FIGURES:
            values = np.array(raw[variant][f])
            cells.append(f"{values.mean():.1f} ± {(values.max() - values.min()) / 2:.1f}")
        lines.append(f"| {variant} ({len(results)} seeds) | " + " | ".join(cells) + " |")
    (root.parent / f"{proxy}.json").write_text(json.dumps(raw, indent=2) + "\n")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--proxy", default="demo", help="demo or parts")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--root", default="runs/ablation")
    p.add_argument("--budget", nargs="*", default=["train.epochs=4", "train.batches_per_epoch=20",
                                                    "train.lr_step=3"],
                   help="overrides that set the same budget for every variant")
    p.add_argument("--only", nargs="*", default=None, help="variants to run (default: all)")
    p.add_argument("--table", action="store_true", help="only print the table of finished runs")
    p.add_argument("--threads", type=int, default=None, help="threads per run (OMP_NUM_THREADS)")
    launch.add_arguments(p)
    args = p.parse_args(argv)
    root = Path(args.root) / args.proxy
    if not args.table:
        wanted = [v for v in list(SWITCHES) + ["ours"] + list(RECIPE_CHOICES)
                  if (args.only is None and v not in RECIPE_CHOICES) or v in (args.only or [])]
        launch.launch([train_variant(args.proxy, v, s, args.budget, root, args.threads)
                       for s in args.seeds for v in wanted], args, root)
        evals = []
        for seed in args.seeds:
            release_run = root / f"release-seed{seed}" / "results.json"
            for variant in EVAL_ONLY:
                if release_run.is_file() and (args.only is None or variant in args.only):
                    evals.append(eval_variant(release_run, variant, seed, root))
        launch.launch(evals, args, root)
    print(table(args.proxy, args.seeds, root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
