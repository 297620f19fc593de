"""Results as a readable table and as JSON."""

from __future__ import annotations

from mgmrn.evaluation.results import ReleaseProtocol, ZSLResults


def format_results(results: ZSLResults, title: str = "results") -> str:
    """A plain-text table of the headline figures (accuracies in percent)."""
    last = f" (epoch {results.epochs})" if results.epochs is not None else ""
    rows = [
        (f"last epoch{last}:", ""),
        ("CZSL accuracy (unseen classes)", f"{results.czsl_acc:.2f}"),
        ("GZSL seen S", f"{results.gzsl_seen:.2f}"),
        ("GZSL unseen U", f"{results.gzsl_unseen:.2f}"),
        ("GZSL harmonic mean H", f"{results.gzsl_h:.2f}"),
        ("calibration gamma", f"{results.gamma:.2f}  ({results.calibration or 'oracle'})"),
        ("AUSUC", f"{results.ausuc:.2f}"),
    ]
    if results.gzsl_uncalibrated is not None:
        u = results.gzsl_uncalibrated
        rows.append(("GZSL at gamma 0: S / U / H", f"{u.seen:.2f} / {u.unseen:.2f} / {u.h:.2f}"))
    if results.fixed_gamma is not None:
        f = results.fixed_gamma
        rows.append((f"GZSL at fixed gamma {f.gamma:.2f}: S / U / H",
                     f"{f.seen:.2f} / {f.unseen:.2f} / {f.h:.2f}"))
    if results.release_protocol is not None:
        rows += _protocol_rows(results.release_protocol)
    if results.chosen_on_validation is not None:
        v = results.chosen_on_validation
        rows.append(("chosen on validation: epoch / gamma", f"{v.epoch + 1} / {v.gamma:.2f}"))
    if results.data is not None:
        d = results.data
        rows.append(("classes seen / unseen", f"{d.n_seen_classes} / {d.n_unseen_classes}"))
        rows.append(("images train / test seen / test unseen",
                     f"{d.n_train} / {d.n_test_seen} / {d.n_test_unseen}"))
    width = max(len(name) for name, _ in rows)
    rule = "-" * (width + 3 + max(len(value) for _, value in rows))
    lines = [title, rule] + [f"{name.ljust(width)}   {value}" for name, value in rows] + [rule]
    return "\n".join(lines)


def _protocol_rows(protocol: ReleaseProtocol) -> list[tuple[str, str]]:
    """The best-over-epochs figures, each with the epoch (from 1) it comes from."""
    return [
        (f"best over epochs, chosen on the {protocol.chosen_on}:", ""),
        ("CZSL accuracy", f"{protocol.czsl_acc:.2f}  (epoch {protocol.czsl_epoch + 1})"),
        ("GZSL S / U / H", f"{protocol.gzsl_seen:.2f} / {protocol.gzsl_unseen:.2f} / "
                           f"{protocol.gzsl_h:.2f}  (epoch {protocol.gzsl_epoch + 1}, "
                           f"gamma {protocol.gamma:.2f})"),
        ("AUSUC", f"{protocol.ausuc:.2f}  (epoch {protocol.ausuc_epoch + 1})"),
    ]
