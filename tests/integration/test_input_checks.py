"""Values that would print nan or overflow are refused; errors and stops say one thing."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from PIL import Image

from mgmrn.cli import main
from mgmrn.config import ConfigError, load_config
from mgmrn.data import DataError
from mgmrn.errors import UsageError
from mgmrn.inference.predictor import load
from mgmrn.serve.app import ApiError, Explorer

from ..helpers import ATTRIBUTE_NAMES, REPO, write_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.mark.parametrize("gamma", ["nan", "inf", "-1e39", "10001"])
def test_predict_refuses_a_gamma_that_is_not_a_usable_number(checkpoint, tmp_path, capsys, gamma):
    image = tmp_path / "photo.png"
    Image.new("RGB", (40, 40), "red").save(image)
    assert main(["predict", "--checkpoint", str(checkpoint), "--classes", "unseen",
                 f"--gamma={gamma}", str(image)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"mgmrn predict: error: --gamma must be a finite number from -10000 to 10000, got "
        f"{float(gamma)}")


def test_the_explorer_refuses_a_finite_gamma_that_overflows_the_scores(checkpoint):
    explorer = Explorer(load(checkpoint))
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), "red").save(buffer, "PNG")
    key = explorer.upload(buffer.getvalue(), "red.png")
    with pytest.raises(ApiError) as err:
        explorer.rank(key, gamma=-1e39)
    assert err.value.status == 400
    assert str(err.value) == "gamma must be a finite number from -10000 to 10000, got -1e+39"
    assert explorer.rank(key, gamma=-1e4)["calibration"]["gamma"] == -1e4


def test_attribute_values_that_overflow_are_refused(checkpoint, tmp_path):
    predictor = load(checkpoint)
    row = [1.0] * len(ATTRIBUTE_NAMES)
    with pytest.raises(DataError, match="class 'huge' has a value beyond"):
        predictor.add_classes(["huge"], [[3e38, *row[1:]]])
    table = tmp_path / "new.csv"
    table.write_text("class," + ",".join(ATTRIBUTE_NAMES) + "\nhuge,3e38," +
                     ",".join("1" for _ in ATTRIBUTE_NAMES[1:]) + "\n")
    with pytest.raises(DataError) as err:
        predictor.add_classes_from_csv(table)
    assert str(err.value).endswith(f"field '{ATTRIBUTE_NAMES[0]}': expected a number from -1e+06 "
                                   f"to 1e+06, got '3e38'")
    with pytest.raises(UsageError):  # the API's gamma: the same bound as the command's
        predictor.predict(Image.new("RGB", (40, 40)), classes="all", gamma=float("nan"))


def test_invalid_yaml_is_one_line_naming_the_place(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("train:\n  epochs: 3\n   lr: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(recipe)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{recipe}: not valid YAML: line 3, column ")


def test_the_libraries_info_lines_stay_out_of_the_output():
    code = ("import logging; from mgmrn.cli import _setup_logging; _setup_logging(False); "
            "logging.getLogger('torch._subclasses.fake_tensor').info('FakeTensor cache stats'); "
            "logging.getLogger('mgmrn.training.runner').info('epoch 1/2'); "
            "logging.getLogger('timm').warning('a warning stays')")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60)
    assert "FakeTensor" not in done.stderr
    assert "epoch 1/2" in done.stderr and "a warning stays" in done.stderr
