"""The accuracy guard: the default recipe, the baseline and the release preset on the proxy sets.

Trains, for each proxy set (``parts``, the default demo, and ``demo``, the shapes set), each
recipe and each seed, at the recipe's full budget:

- ``default``: the plain recipe (``--config <set>``): on ``parts``, the backbone frozen at its
  random initialisation (the demo's recipe until 2026-12-07); on ``demo``, trained from scratch;
- ``baseline``: the same recipe with ``model.name=baseline`` (pooled features, same budget);
- ``release``: the ``<set>-release`` preset (every switch at the published code's value);
- ``pretrained``, ``pretrained-baseline``: the benchmarks' regime, ``--config <set>-pretrained``
  (``parts-pretrained`` is what ``mgmrn train`` runs):
  the backbone starts from the shipped weights (``package:demo_backbone.safetensors``, pretrained
  on the generic drawn set by ``scripts/pretrain_backbone.py``) and is fine-tuned at a hundredth
  of the heads' rate; Mg-MRN and the pooled baseline;
- ``scratch``, ``scratch-baseline``: trained end to end from random weights
  (``model.finetune=true``), the ablation beside the frozen-random ``parts`` recipe and the
  pretrained rows.

and reports every figure under two protocols: GZSL with gamma chosen on the test set (the
oracle, as the published code does) and with gamma chosen on the validation split (a second run
with ``data.split=val``, whose best gamma is then applied to the real test split by
``mgmrn eval eval.gamma=<gamma>``). Figures are the last epoch's. The table gives the mean and
the range over seeds; ``table.json`` keeps every run's figures, with the code's commit.

``--sets digits`` trains on a small real-image set instead: the handwritten digits that ship
inside scikit-learn, described by their seven segments (``digits.py``, beside this file, writes
them in the custom format into ``--digits-root``); there ``pretrained`` is the ``custom`` recipe,
what ``mgmrn train data.name=custom`` runs on a user's own folder (the heads alone for 5 epochs
on the shipped backbone, which then learns at a tenth of the heads' rate), and the other recipes
are the parts set's. ``--set train.backbone_lr_scale=0.1 --set train.heads_only_epochs=5`` gives
the drawn sets' ``pretrained`` the custom recipe's start.

    python benchmarks/accuracy.py --jobs 2 --threads 1                # the default rows, seeds 0 1 2
    python benchmarks/accuracy.py --sets parts --recipes pretrained pretrained-baseline
    python benchmarks/accuracy.py --sets digits --recipes pretrained scratch   # needs scikit-learn
    python benchmarks/accuracy.py --launcher slurm --partition gpu --gpus 1   # a Slurm job array
    python benchmarks/accuracy.py --table                             # only the table of done runs

Runs go to ``runs/accuracy/<set>/<recipe>-<split>-seed<k>/``, through submitit (``launch.py``:
here or on Slurm, see docs/cluster.md); finished runs are not redone and preempted ones resume,
so the script can be stopped and started again. ``--sets`` also takes the benchmarks (``cub``,
``sun``, ``awa2``, with ``--set data.root=...``). A default of the project changes only with this
table at the full budget behind it, the before and after rows quoted in the commit message.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # launch.py, beside this file
import digits  # noqa: E402
import launch  # noqa: E402

SETS = ("parts", "demo")
# real-image sets in the custom format, trained with the custom recipe ("pretrained") and the
# parts recipes (the rest): name -> its overrides
CUSTOM_SETS = {"digits": digits.OVERRIDES}
BENCHMARKS = ("cub", "sun", "awa2")
RECIPES = ("default", "baseline", "release", "pretrained", "pretrained-baseline", "scratch",
           "scratch-baseline")
DEFAULT_RECIPES = ("pretrained", "pretrained-baseline", "default", "baseline", "release")
SPLITS = ("trainval", "val")
# column -> how it is read from a run: (results file, key path)
COLUMNS = {
    "CZSL": ("trainval", ("czsl_acc",)),
    "S (oracle)": ("trainval", ("gzsl_seen",)),
    "U (oracle)": ("trainval", ("gzsl_unseen",)),
    "H (oracle)": ("trainval", ("gzsl_h",)),
    "S (val gamma)": ("valgamma", ("fixed_gamma", "seen")),
    "U (val gamma)": ("valgamma", ("fixed_gamma", "unseen")),
    "H (val gamma)": ("valgamma", ("fixed_gamma", "h")),
    "AUSUC": ("trainval", ("ausuc",)),
    "gamma (oracle)": ("trainval", ("gamma",)),
    "gamma (val)": ("valgamma", ("fixed_gamma", "gamma")),
}


@dataclass(frozen=True)
class Cell:
    """One trained run: a set, a recipe, a split and a seed."""

    set: str
    recipe: str
    split: str
    seed: int
    data_root: str | None = None  # the folder of a custom set (CUSTOM_SETS)

    def folder(self, root: Path) -> Path:
        return root / self.set / f"{self.recipe}-{self.split}-seed{self.seed}"

    def command(self, root: Path, extra: list[str]) -> list[str]:
        base = "parts" if self.set in CUSTOM_SETS else self.set
        # a custom set's "pretrained" is what a user's own folder gets: the custom recipe
        pretrained = "custom" if self.set in CUSTOM_SETS else f"{base}-pretrained"
        config = {"release": f"{base}-release",
                  "pretrained": pretrained}.get(self.recipe.removesuffix("-baseline"), base)
        args = [sys.executable, "-m", "mgmrn", "train", "--config", config, f"seed={self.seed}",
                f"output_dir={self.folder(root)}", f"data.split={self.split}"]
        if self.set in CUSTOM_SETS:
            args += [*CUSTOM_SETS[self.set], f"data.root={self.data_root}"]
        if self.recipe.startswith("scratch"):
            args.append("model.finetune=true")
        if self.recipe.endswith("baseline"):
            args.append("model.name=baseline")
        return [*args, *extra]


def train_command(cell: Cell, root: Path, extra: list[str], threads: int | None) -> launch.Command:
    """The training of ``cell``: done when its results.json exists, resumed from its last.pt."""
    folder = cell.folder(root)
    return launch.Command(cell.command(root, extra), folder.with_suffix(".log"),
                          folder / "results.json", folder / "checkpoints" / "last.pt", threads)


def val_gamma_command(cell: Cell, root: Path, threads: int | None) -> launch.Command | None:
    """Evaluating the trainval run of ``cell`` at the gamma its validation run chose; None
    until both runs are finished."""
    trainval = Cell(cell.set, cell.recipe, "trainval", cell.seed).folder(root)
    val = Cell(cell.set, cell.recipe, "val", cell.seed).folder(root) / "results.json"
    out = trainval / "valgamma" / "results.json"  # its own folder: the figures keep their names
    if not val.is_file() or not (trainval / "results.json").is_file():
        return None
    gamma = json.loads(val.read_text())["chosen_on_validation"]["gamma"]
    return launch.Command([sys.executable, "-m", "mgmrn", "eval", "--checkpoint",
                           str(trainval / "checkpoints" / "last.pt"), "--out", str(out),
                           f"eval.gamma={gamma}"], trainval / "valgamma.log", out, threads=threads)


def _read(path: Path, keys: tuple[str, ...]) -> float | None:
    if not path.is_file():
        return None
    value = json.loads(path.read_text())
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return float(value)


def collect(root: Path, sets, recipes, seeds) -> dict:
    """{set: {recipe: {column: [value per seed, None where missing]}}} of the finished runs."""
    raw: dict = {}
    for name in sets:
        for recipe in recipes:
            folders = [Cell(name, recipe, "trainval", s).folder(root) for s in seeds]
            files = {"trainval": [f / "results.json" for f in folders],
                     "valgamma": [f / "valgamma" / "results.json" for f in folders]}
            columns = {column: [_read(p, keys) for p in files[source]]
                       for column, (source, keys) in COLUMNS.items()}
            if any(v is not None for v in columns["CZSL"]):
                raw.setdefault(name, {})[recipe] = columns
    return raw


def summarise(values: list[float | None], digits: int = 1) -> str:
    """``mean (min-max)`` over the seeds that have a value, with their count when some lack it."""
    present = np.array([v for v in values if v is not None], dtype=float)
    if not present.size:
        return "-"
    text = f"{present.mean():.{digits}f}"
    if present.size > 1:
        text += f" ({present.min():.{digits}f}-{present.max():.{digits}f})"
    if present.size < len(values):
        text += f" [{present.size} seeds]"
    return text


def markdown_table(raw: dict, seeds: list[int]) -> str:
    """One row per set and recipe: each column's mean (range) over seeds."""
    shown = [c for c in COLUMNS if not c.startswith("gamma")]
    lines = ["| set | recipe | " + " | ".join(shown) + " |", "|---|---" + "|---" * len(shown) + "|"]
    for name, recipes in raw.items():
        for recipe, columns in recipes.items():
            cells = [summarise(columns[c]) for c in shown]
            lines.append(f"| {name} | {recipe} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Mean (min-max) over seeds {', '.join(map(str, seeds))}; last epoch; 'oracle': "
                 f"gamma chosen on the test set; 'val gamma': chosen on the validation split "
                 f"(data.split=val) and applied to the test split.")
    return "\n".join(lines)


def commit() -> str:
    """The code's commit, with ``+changes`` when the work tree differs from it."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, check=True,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=here, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sets", nargs="+", default=list(SETS),
                   choices=SETS + tuple(CUSTOM_SETS) + BENCHMARKS)
    p.add_argument("--digits-root", default=".cache/mgmrn/digits",
                   help="where --sets digits writes and reads its folder (benchmarks/digits.py)")
    p.add_argument("--recipes", nargs="+", default=list(DEFAULT_RECIPES), choices=RECIPES)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--no-val", action="store_true",
                   help="skip the validation runs (oracle gamma only)")
    p.add_argument("--root", default="runs/accuracy", help="where the runs go")
    p.add_argument("--threads", type=int, default=None, help="threads per run (OMP_NUM_THREADS)")
    p.add_argument("--table", action="store_true", help="only the table of finished runs")
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                   help="an override for every run (e.g. a tiny budget for a smoke test)")
    launch.add_arguments(p)
    args = p.parse_args(argv)
    root = Path(args.root)
    splits = ("trainval",) if args.no_val else SPLITS
    data_roots = {"digits": str(Path(args.digits_root).resolve())}
    cells = [Cell(n, r, s, k, data_roots.get(n)) for k in args.seeds for n in args.sets
             for r in args.recipes for s in splits]
    if not args.table:
        if "digits" in args.sets:
            digits.ensure(Path(data_roots["digits"]))
        # the longest runs (the release preset's three passes per batch) first
        cells.sort(key=lambda c: (c.recipe != "release", c.seed))
        launch.launch([train_command(c, root, args.extra, args.threads) for c in cells], args,
                      root)
        if not args.no_val:
            evals = [val_gamma_command(c, root, args.threads) for c in cells
                     if c.split == "trainval"]
            launch.launch([e for e in evals if e is not None], args, root)
    raw = collect(root, args.sets, args.recipes, args.seeds)
    table = markdown_table(raw, args.seeds)
    code = commit()
    stamp = f"commit {code}, {datetime.date.today().isoformat()}"
    print(f"{stamp}\n\n{table}")
    (root / "table.md").write_text(f"{stamp}\n\n{table}\n")
    (root / "table.json").write_text(json.dumps({"commit": code, "seeds": args.seeds,
                                                 "runs": raw}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
