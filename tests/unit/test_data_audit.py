"""``mgmrn data check``: a good tree, and trees with one problem each, every problem named."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io

from mgmrn.cli import main
from mgmrn.config import DataConfig
from mgmrn.data.audit import PUBLISHED, check_data, format_report

from ..helpers import make_full, write_custom
from ..xlsa17_fixture import COUNTS, write_tree


def statuses(rows) -> dict[str, str]:
    return {r.name: r.status for r in rows}


def failed(rows) -> list[str]:
    return [r.name for r in rows if r.status == "FAIL"]


@pytest.fixture
def tree(tmp_path):
    images = write_tree(tmp_path, "cub")
    return tmp_path, images


def check(root, **kwargs):
    return check_data(DataConfig(name="cub", root=str(root), **kwargs), expected=COUNTS, threads=2)


def test_good_tree(tree):
    root, images = tree
    rows = check(root)
    assert failed(rows) == [] and "FAIL" not in format_report(rows)
    assert statuses(rows) == {
        "xlsa17 folder": "ok", "res101.mat": "ok", "att_splits.mat": "ok",
        "trainclasses1.txt": "ok", "valclasses1.txt": "ok", "splits and image paths": "ok",
        "attribute vectors": "ok", "seen classes": "ok", "unseen classes": "ok",
        "training images": "ok", "seen test images": "ok", "unseen test images": "ok",
        "image files present": "ok", "images decode": "ok"}
    detail = {r.name: r.detail for r in rows}
    assert detail["image files present"] == f"{len(images)} of {len(images)}"
    assert detail["attribute vectors"].startswith("(312, 300) from ")
    assert "packaged copy" in detail["attribute vectors"]
    assert "'BS/xian/work/data' -> " in detail["splits and image paths"]
    assert format_report(rows).endswith(f"all {len(rows)} checks passed")


def test_missing_image_is_named(tree):
    root, images = tree
    images[4].unlink()
    rows = check(root)
    assert failed(rows) == ["image files present"]
    row = next(r for r in rows if r.name == "image files present")
    assert row.files == [str(images[4])] and row.detail.startswith("1 of 12 missing under ")
    report = format_report(rows)
    assert str(images[4]) in report and "1 of 14 checks failed" in report


def test_truncated_image_is_named(tree):
    root, images = tree
    data = images[7].read_bytes()
    images[7].write_bytes(data[:len(data) // 2])
    rows = check(root)
    assert failed(rows) == ["images decode"]
    row = next(r for r in rows if r.name == "images decode")
    assert len(row.files) == 1 and row.files[0].startswith(str(images[7]))
    assert "truncated" in row.files[0].lower()
    assert str(images[7]) in format_report(rows)


def test_wrong_split_size_is_named(tree):
    root, _ = tree
    path = root / "xlsa17/data/CUB/att_splits.mat"
    mat = {k: v for k, v in scipy.io.loadmat(path).items() if not k.startswith("__")}
    mat["trainval_loc"] = mat["trainval_loc"][1:]  # one training image fewer
    scipy.io.savemat(path, mat)
    rows = check(root)
    assert failed(rows) == ["training images"]
    row = next(r for r in rows if r.name == "training images")
    assert row.detail == "5, but the published split has 6"


def test_missing_att_splits_is_named(tree):
    root, _ = tree
    (root / "xlsa17/data/CUB/att_splits.mat").unlink()
    rows = check(root)
    assert failed(rows) == ["att_splits.mat"]
    row = next(r for r in rows if r.name == "att_splits.mat")
    assert row.detail == f"{root / 'xlsa17/data/CUB/att_splits.mat'} not found"
    assert rows[-1].status == "skipped"


def test_bad_vectors_do_not_hide_the_splits(tree, tmp_path):
    root, _ = tree
    vectors = tmp_path / "vectors.npy"
    np.save(vectors, np.ones((5, 300), dtype=np.float32))
    rows = check(root, attribute_vectors=str(vectors))
    assert failed(rows) == ["attribute vectors"]
    row = next(r for r in rows if r.name == "attribute vectors")
    assert "5 attribute vectors" in row.detail and "312 attributes" in row.detail
    assert statuses(rows)["training images"] == "ok"


def test_missing_class_lists_warn_unless_val_split(tree):
    root, _ = tree
    (root / "xlsa17/data/CUB/valclasses1.txt").unlink()
    assert statuses(check(root))["valclasses1.txt"] == "warn"
    assert failed(check(root, split="val")) == ["valclasses1.txt"]


def test_custom_dataset(tmp_path):
    root = write_custom(tmp_path / "mine")
    rows = check_data(DataConfig(name="custom", root=str(root)), threads=2)
    assert failed(rows) == []
    assert "no published counts" in next(r.detail for r in rows if r.name == "split sizes")
    broken = root / "images" / "zebra" / "1.JPG"
    broken.write_bytes(b"not an image")
    rows = check_data(DataConfig(name="custom", root=str(root)), threads=2)
    assert failed(rows) == ["images decode"] and str(broken) in format_report(rows)
    (root / "classes.csv").unlink()
    rows = check_data(DataConfig(name="custom", root=str(root)), threads=2)
    assert failed(rows) == ["custom dataset"] and "classes.csv not found" in rows[0].detail


def test_check_of_a_demo_set_not_drawn_yet_writes_nothing(tmp_path, capsys):
    from mgmrn.config import load_config
    from mgmrn.data import read_records

    small = ["data.demo.num_shapes=3", "data.demo.num_colors=3", "data.demo.num_patterns=2",
             "data.demo.num_unseen=4", "data.demo.images_per_class=2", "data.demo.image_size=32"]
    root = tmp_path / "demo"
    root.mkdir()
    assert main(["data", "check", "--config", "demo", f"data.root={root}", *small]) == 1
    out = capsys.readouterr().out
    assert "holds no demo set drawn with these settings, and a check writes nothing" in out
    assert list(root.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["demo"]
    read_records(load_config("demo", [f"data.root={root}", *small]).data)  # as training draws it
    assert main(["data", "check", "--config", "demo", f"data.root={root}", *small]) == 0


def test_cli_exit_status_and_json(tree, capsys):
    root, _ = tree
    # the tiny tree is not the published split: every count differs, and the table says so
    assert main(["data", "check", "--config", "cub", f"data.root={root}"]) == 1
    out = capsys.readouterr().out
    assert "training images" in out and "6, but the published split has 7,057" in out
    assert main(["data", "check", "--json", "--config", "cub", f"data.root={root}"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert {c["name"] for c in report["checks"] if c["status"] == "FAIL"} == {
        "seen classes", "unseen classes", "training images", "seen test images",
        "unseen test images"}


def test_published_counts_of_the_real_cub_split(tmp_path, capsys):
    """The real att_splits.mat with every image (tiny) in place: every published count holds."""
    make_full(tmp_path, "CUB", create="all")
    assert main(["data", "check", "--config", "cub", f"data.root={tmp_path}", "--threads", "4"]) == 0
    out = capsys.readouterr().out
    for count in PUBLISHED["cub"]:
        assert f"{count:,} (published {count:,})" in out
    assert "11,788 of 11,788" in out and "all 14 checks passed" in out
