"""docs/configuration.md is generated from the config dataclasses and must match them."""

from pathlib import Path

import pytest

from ..helpers import load_script

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def reference():
    return load_script("scripts/config_reference.py")


def test_configuration_md_is_current(reference):
    written = (ROOT / "docs" / "configuration.md").read_text()
    assert written == reference.render(), (
        f"docs/configuration.md is stale; regenerate it with: {reference.COMMAND}")


def test_every_key_and_switch_is_listed(reference):
    import dataclasses

    from mgmrn.config import Config

    def keys(obj, prefix=""):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                yield from keys(value, f"{prefix}{f.name}.")
            else:
                yield f"{prefix}{f.name}"

    text = reference.render()
    known = set(keys(Config()))
    for key in known:
        assert f"| `{key}` |" in text, key
    stale = (set(reference.MEANINGS) | set(reference.DETAILS)) - known
    assert not stale, f"meanings for keys config.py no longer has: {sorted(stale)}"
    for key in reference.release_switches():
        assert f"| `{key}` | " in text.split("## Every key")[0], key


def test_comments_are_read_from_config_py(reference):
    comments = reference.field_comments()
    assert comments["ModelConfig"]["num_parts"] == "K, region-grouping parts per level"
    # a comment block above a field belongs to it
    assert "CUDA graph" in comments["EvalConfig"]["cuda_graphs"]
    assert "backbone" not in comments["ModelConfig"]  # no comment: MEANINGS gives it


def test_check_flag_reports_a_stale_file(reference, tmp_path, monkeypatch, capsys):
    stale = tmp_path / "configuration.md"
    stale.write_text("old\n")
    monkeypatch.setattr(reference, "OUTPUT", stale)
    monkeypatch.setattr(reference, "ROOT", tmp_path)
    assert reference.main(["--check"]) == 1
    assert "python scripts/config_reference.py" in capsys.readouterr().out
    assert reference.main([]) == 0
    assert reference.main(["--check"]) == 0
