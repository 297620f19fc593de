"""How ``mgmrn`` ends on an error: mgmrn's own errors and OSError in one line with exit status
2, anything else (a bug) with its traceback and exit status 1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mgmrn import cli
from mgmrn.checkpoint import CheckpointError
from mgmrn.commands import eval as eval_command
from mgmrn.config import ConfigError
from mgmrn.data.download.archives import ArchiveError
from mgmrn.data.download.fetch import DownloadError
from mgmrn.data.errors import DataError
from mgmrn.errors import MgmrnError, UsageError
from mgmrn.export import ExportError
from mgmrn.hub import HubError
from mgmrn.io.atomic import DiskWriteError
from mgmrn.io.locks import FolderBusyError
from mgmrn.models.backbone import PretrainedWeightsError
from mgmrn.models.backbone_spec import BackboneError
from mgmrn.models.release import ReleaseWeightsError
from mgmrn.training.engine import NonFiniteLossError
from mgmrn.training.runner import RunFolderError

ROOT = Path(__file__).resolve().parents[2]

# each of mgmrn's own error types, with the builtin base that callers catching it still see
OWN_ERRORS = [
    (ConfigError, ValueError), (DataError, ValueError), (CheckpointError, ValueError),
    (RunFolderError, ValueError), (ReleaseWeightsError, ValueError), (BackboneError, ValueError),
    (UsageError, ValueError), (DiskWriteError, RuntimeError), (FolderBusyError, RuntimeError),
    (PretrainedWeightsError, RuntimeError), (ArchiveError, RuntimeError),
    (DownloadError, RuntimeError), (NonFiniteLossError, RuntimeError), (HubError, ValueError),
    (ExportError, ValueError),
]


def failing_eval(error: BaseException):
    """A stand-in for the function ``mgmrn eval`` calls, raising ``error``."""
    def evaluate_checkpoint(*args, **kwargs):
        raise error
    return evaluate_checkpoint


@pytest.mark.parametrize("kind, builtin", OWN_ERRORS, ids=lambda k: getattr(k, "__name__", k))
def test_own_errors_end_in_one_line_with_status_2(kind, builtin, monkeypatch, capsys):
    assert issubclass(kind, MgmrnError) and issubclass(kind, builtin)
    monkeypatch.setattr(eval_command, "evaluate_checkpoint", failing_eval(kind("what to change")))
    assert cli.main(["eval", "--checkpoint", "run.pt"]) == 2
    assert capsys.readouterr().err == "mgmrn eval: error: what to change\n"


@pytest.mark.parametrize("error", [FileNotFoundError(2, "No such file or directory", "x.pt"),
                                   PermissionError(13, "Permission denied", "runs"),
                                   OSError(28, "No space left on device")],
                         ids=["missing", "permission", "full-disk"])
def test_os_errors_end_in_one_line_with_status_2(error, monkeypatch, capsys):
    monkeypatch.setattr(eval_command, "evaluate_checkpoint", failing_eval(error))
    assert cli.main(["eval", "--checkpoint", "run.pt"]) == 2
    assert capsys.readouterr().err == f"mgmrn eval: error: {error}\n"


@pytest.mark.parametrize("error", [ValueError("a bug"), KeyError("a bug"), RuntimeError("a bug"),
                                   TypeError("a bug")], ids=lambda e: type(e).__name__)
def test_any_other_error_is_a_bug_shown_with_its_traceback_and_status_1(error, monkeypatch,
                                                                         capsys):
    monkeypatch.setattr(eval_command, "evaluate_checkpoint", failing_eval(error))
    assert cli.main(["eval", "--checkpoint", "run.pt"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):\n")
    assert "in evaluate_checkpoint\n" in err  # the frame that raised it
    assert f"{type(error).__name__}: " in err and "a bug" in err
    assert err.endswith("mgmrn eval: internal error (traceback above); please report it\n")


@pytest.mark.parametrize("error", [ConfigError("bad value"), ValueError("a bug")],
                         ids=["own", "bug"])
def test_verbose_raises_every_error(error, monkeypatch):
    monkeypatch.setattr(eval_command, "evaluate_checkpoint", failing_eval(error))
    with pytest.raises(type(error), match=str(error)):
        cli.main(["--verbose", "eval", "--checkpoint", "run.pt"])


def test_the_data_commands_name_their_subcommand(monkeypatch, capsys):
    from mgmrn.commands import data as commands

    def check_command(args):
        raise DataError("images/1.jpg: not an image")

    monkeypatch.setattr(commands, "check_command", check_command)
    assert cli.main(["data", "check"]) == 2
    assert capsys.readouterr().err == "mgmrn data check: error: images/1.jpg: not an image\n"


def test_a_bad_config_from_the_shell_is_one_line_with_status_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mgmrn", "train", "--config", "demo",
                           f"output_dir={tmp_path / 'run'}", "model.halving=nearest"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == ("mgmrn train: error: config key 'model.halving': "
                                            "expected one of mean, align_corners, got 'nearest'")
    assert "Traceback" not in done.stderr


def test_user_fixable_errors_of_the_library_are_mgmrns_own(tmp_path, monkeypatch):
    """A few raise sites that once raised plain ValueError, each with its message kept."""
    import numpy as np

    from mgmrn import distributed
    from mgmrn.data.samplers import EpisodicBatchSampler
    from mgmrn.inference.classes import parse_class_sets, read_class_table
    from mgmrn.inference.inputs import read_image

    with pytest.raises(UsageError, match="--classes must be 'all' or a comma-separated"):
        parse_class_sets("neither")
    table = tmp_path / "new.csv"
    table.write_text("class,red\nfox,lots\n")
    with pytest.raises(DataError, match=r"new.csv line 2, field 'red': expected a number, got 'lots'"):
        read_class_table(table, ["red"])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot read image '.*broken.png'"):
        read_image(broken, 0)
    labels = np.array([0, 0, 1, 1])
    with pytest.raises(DataError, match="data.ways=3 exceeds the 2 seen classes"):
        EpisodicBatchSampler(labels, ways=3, shots=1, batches_per_epoch=1, seed=0)
    monkeypatch.setattr(distributed.torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="device 'cuda' was asked for but CUDA is not available"):
        distributed.resolve_device("cuda")


def test_an_override_that_is_not_yaml_is_one_line_with_status_2(capsys):
    assert cli.main(["train", "train.epochs=["]) == 2
    assert capsys.readouterr().err == (
        "mgmrn train: error: override 'train.epochs=[': the value is not valid YAML (expected the "
        "node content, but found '<stream end>'); quote it to give a string\n")


def test_help_of_every_command_answers_without_importing_torch():
    """Each command module imports torch when it runs, not when the parser is built."""
    code = ("import sys; from mgmrn import cli\n"
            "try:\n    cli.main(['export', '--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch was imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--format {hub,onnx}" in done.stdout


@pytest.mark.parametrize("command", ["eval", "predict", "serve", "export", "features"])
def test_every_command_that_reads_a_model_takes_a_file_or_a_model_folder(command, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main([command, "--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--checkpoint CHECKPOINT" in text and "local-dir:DIR or hf-hub:org/name" in text
    with pytest.raises(SystemExit) as stop:  # required: refused without it
        cli.main([command])
    assert stop.value.code == 2 and "--checkpoint" in capsys.readouterr().err
