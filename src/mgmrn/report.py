"""Results as a readable table and as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from .atomic import write_atomic


def write_json(obj: dict, path: str | Path) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    write_atomic(path, json.dumps(obj, indent=2) + "\n")


def format_results(results: dict, title: str = "results") -> str:
    """A plain-text table of the headline figures (accuracies in percent)."""
    rows = [
        ("CZSL accuracy (unseen classes)", f"{results['czsl_acc']:.2f}"),
        ("GZSL seen S", f"{results['gzsl_seen']:.2f}"),
        ("GZSL unseen U", f"{results['gzsl_unseen']:.2f}"),
        ("GZSL harmonic mean H", f"{results['gzsl_h']:.2f}"),
        ("calibration gamma", f"{results['gamma']:.2f}  ({results.get('calibration', 'oracle')})"),
        ("AUSUC", f"{results['ausuc']:.2f}"),
    ]
    if "gzsl_uncalibrated" in results:
        u = results["gzsl_uncalibrated"]
        rows.append(("GZSL at gamma 0: S / U / H",
                     f"{u['seen']:.2f} / {u['unseen']:.2f} / {u['h']:.2f}"))
    if "fixed_gamma" in results:
        f = results["fixed_gamma"]
        rows.append((f"GZSL at fixed gamma {f['gamma']:.2f}: S / U / H",
                     f"{f['seen']:.2f} / {f['unseen']:.2f} / {f['h']:.2f}"))
    if "data" in results:
        d = results["data"]
        rows.append(("classes seen / unseen", f"{d['n_seen_classes']} / {d['n_unseen_classes']}"))
        rows.append(("images train / test seen / test unseen",
                     f"{d['n_train']} / {d['n_test_seen']} / {d['n_test_unseen']}"))
    width = max(len(name) for name, _ in rows)
    rule = "-" * (width + 3 + max(len(value) for _, value in rows))
    lines = [title, rule] + [f"{name.ljust(width)}   {value}" for name, value in rows] + [rule]
    return "\n".join(lines)
