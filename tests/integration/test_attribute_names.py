"""A checkpoint is used only on data with its attributes, by name and order; eval writes beside a
run, never over it."""

from __future__ import annotations

import pytest

from mgmrn.cli import main

from ..helpers import folder_bytes, tiny, write_custom


@pytest.fixture(scope="module")
def custom_run(tmp_path_factory):
    """A finished one-epoch run on a custom set of 4 attributes."""
    tmp_path = tmp_path_factory.mktemp("names")
    root = write_custom(tmp_path / "set")
    assert main(["train", *tiny(tmp_path, "run", "train.epochs=1", "data.name=custom",
                                f"data.root={root}", "data.ways=2", "data.shots=2")]) == 0
    return tmp_path


def swapped_columns(tmp_path, name: str):
    """The run's set with its first two attribute columns' names swapped: same count, same
    values, attributes in another order."""
    root = write_custom(tmp_path / name)
    table = root / "classes.csv"
    table.write_text(table.read_text().replace("class,split,red,round", "class,split,round,red", 1))
    return root


def test_eval_refuses_data_whose_attributes_differ_in_name_or_order(custom_run, capsys):
    root = swapped_columns(custom_run, "swapped-eval")
    checkpoint = custom_run / "run" / "checkpoints" / "last.pt"
    assert main(["eval", "--checkpoint", str(checkpoint), f"data.root={root}"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"mgmrn eval: error: checkpoint '{checkpoint}' was trained on other attributes than the "
        f"custom data at {root}: attribute 1 is 'red' in the checkpoint but 'round' in the data; "
        f"use it on the dataset it was trained on")
    assert not (checkpoint.parent / "results.json").exists()


def test_compare_refuses_a_run_whose_data_changed_its_attributes(custom_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(custom_run / "run", run)
    root = custom_run / "set"
    before = (root / "classes.csv").read_text()
    try:
        swapped = swapped_columns(tmp_path, "swapped")
        shutil.copy(swapped / "classes.csv", root / "classes.csv")
        assert main(["compare", str(run), "--out", str(tmp_path / "cmp"), "--figures", "0"]) == 2
    finally:
        (root / "classes.csv").write_text(before)
    err = capsys.readouterr().err
    assert "attribute 1 is 'red' in the checkpoint but 'round' in the data" in err


def test_eval_out_into_a_run_folder_is_refused_and_the_run_kept(custom_run, capsys):
    run = custom_run / "run"
    kept = folder_bytes(run)
    for out in (run / "results.json", run / "eval.json"):
        assert main(["eval", "--checkpoint", str(run / "checkpoints" / "last.pt"),
                     "--out", str(out)]) == 2
        assert capsys.readouterr().err.strip() == (
            f"mgmrn eval: error: --out '{out}': '{run}' is the folder of a training run, whose "
            f"results.json and figures the evaluation's would overwrite; write into another "
            f"folder, e.g. --out {run / 'eval' / out.name}")
    assert folder_bytes(run) == kept
    out = run / "eval" / "results.json"  # the advice works
    assert main(["eval", "--checkpoint", str(run / "checkpoints" / "last.pt"),
                 "--out", str(out)]) == 0
    assert out.is_file() and (run / "eval" / "seen_unseen_curve.png").is_file()
