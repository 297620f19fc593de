"""The closed choices of mgmrn's switches, each spelled once, as ``typing.Literal`` types.

The config dataclasses annotate their fields with these types, and the config's validation
table is derived from them (``typing.get_args``); the network modules below ``build_model`` take
the same types and check their values against the same lists (:func:`check_choice`). Adding a
value means adding it here and handling it where it is used, nothing else. This module imports
nothing of mgmrn, so both the config and the models can use it.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Literal

# model
ModelName = Literal["mgmrn", "baseline"]
Norm = Literal["group", "batch"]
Grouping = Literal["regions", "identity"]
Halving = Literal["mean", "align_corners"]
PrototypeInit = Literal["normal", "scaled"]
# data
DatasetName = Literal["demo", "parts", "cub", "sun", "awa2", "custom"]
Semantic = Literal["original", "normalized"]
Split = Literal["trainval", "val"]
TestResize = Literal["ratio", "crop"]
Sampler = Literal["episodic", "random"]
AutoWorkers = Literal["auto"]  # beside a count of loading processes
# train
Optimizer = Literal["sgd", "adamw"]
LrStepAt = Literal["end", "start"]
LrSchedule = Literal["step", "cosine"]
Schedule = Literal["fused", "alternating"]
Amp = Literal["auto", "bf16", "fp16", "none"]
CompileHeads = Literal["regions"]  # beside true (the whole network) and false
# eval
AusucOrder = Literal["gamma", "release"]


def check_choice(name: str, value: object, choices: typing.Any) -> None:
    """Refuse a value outside a ``Literal`` type's choices.

    Args:
        name: the argument's name, for the message.
        value: the value given.
        choices: one of this module's ``Literal`` types.

    Raises:
        ValueError: ``value`` is not one of ``typing.get_args(choices)``.
    """
    allowed = typing.get_args(choices)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


def choice_fields(cls: type, prefix: str = "") -> dict[str, tuple]:
    """Dotted key -> accepted values, for every field of the dataclass ``cls`` (and of its
    dataclass sections) annotated by a ``Literal`` alone: the config's validation table."""
    found: dict[str, tuple] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            found.update(choice_fields(hint, f"{prefix}{f.name}."))
        elif typing.get_origin(hint) is typing.Literal:
            found[f"{prefix}{f.name}"] = typing.get_args(hint)
    return found
