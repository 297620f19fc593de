"""The explorer's work, apart from HTTP: classify uploads, draw attention, add classes.

Every method returns plain data or PNG bytes, or raises :class:`ApiError` with the HTTP status and
the one-line message the page shows. One lock serialises the network (memory stays bounded, the
added classes never change under a running prediction); pages wait for it in turn.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
import threading
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from mgmrn.data.datasets import check_image_size, to_rgb
from mgmrn.data.errors import DataError
from mgmrn.data.readers.class_table import parse_class_table
from mgmrn.data.transforms import normalize_images
from mgmrn.errors import UsageError
from mgmrn.inference.calibration import check_gamma
from mgmrn.inference.predictor import Predictor
from mgmrn.inference.scoring import network_levels
from mgmrn.serve.run_view import RunView

MAX_PIXELS = 40_000_000  # decoded size refused beyond this (a 1 MB PNG can decode to gigabytes)
CACHED_IMAGES = 32  # uploads kept for re-ranking and attention maps


class ApiError(Exception):
    """A request the page gets an answer to: ``status`` and a one-line ``message``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class Explorer:
    """A served checkpoint and, optionally, its run folder.

    Args:
        predictor: the loaded model.
        run: a run folder to browse, or None.
        max_pixels: largest decoded image accepted (width x height).
    """

    def __init__(self, predictor: Predictor, run: str | Path | None = None,
                 max_pixels: int = MAX_PIXELS):
        self.predictor = predictor
        self.max_pixels = max_pixels
        self.model_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._images: OrderedDict[str, tuple[torch.Tensor, str]] = OrderedDict()
        self._scratch = tempfile.TemporaryDirectory(prefix="mgmrn-serve-")
        self.scratch = Path(self._scratch.name)
        self.run = RunView(run, self.scratch, predictor, self.model_lock) if run else None
        attributes = predictor.classes.attributes
        self.levels = list(network_levels(predictor.run.model))
        self.has_attention = bool(getattr(predictor.run.model, "has_attention", False))
        self.attribute_range = [min(0.0, float(attributes.min())), float(attributes.max())]

    def close(self) -> None:
        self._scratch.cleanup()

    def info(self) -> dict[str, Any]:
        p, config = self.predictor, self.predictor.run.config
        return {
            "model": config.model.name, "dataset": config.data.name,
            "classes": self.classes(), "attributes": p.attribute_names,
            "attribute_range": self.attribute_range, "gamma": p.calibration.gamma,
            "gamma_source": p.calibration.source, "levels": self.levels,
            "attention": self.has_attention, "run": self.run is not None,
            "epoch": p.run.epochs_trained, "epochs": config.train.epochs,
        }

    def classes(self) -> list[dict[str, Any]]:
        registry = self.predictor.classes
        return [{"index": i, "name": n, "group": registry.group(i)}
                for i, n in enumerate(registry.names)]

    def upload(self, data: bytes, name: str) -> str:
        """Decode an uploaded image, keep it, and return its id."""
        try:
            image = Image.open(io.BytesIO(data))
            width, height = image.size
        except Image.DecompressionBombError as err:  # PIL's own limit, far above ours
            raise ApiError(413, f"'{name}' has too many pixels to be read safely ({err})") from err
        except Exception as err:  # noqa: BLE001 - PIL raises many types for what is no image
            raise ApiError(400, f"'{name}' is not an image that can be read (jpg, png, bmp, webp, "
                                f"...): {type(err).__name__}") from err
        try:
            check_image_size(image, name)  # from the header, before the pixels are decoded
        except DataError as err:
            raise ApiError(413, str(err)) from err
        if width * height > self.max_pixels:
            raise ApiError(413, f"'{name}' is {width} x {height} pixels, more than the "
                                f"{self.max_pixels / 1e6:.0f} megapixels accepted; resize it")
        try:
            # normalised: predict() takes a float tensor as the network's input as it is
            tensor = normalize_images(self.predictor.inference.transform(to_rgb(image))[None],
                                      self.predictor.run.inputs)[0]
        except Exception as err:  # noqa: BLE001 - a truncated file fails only when decoded
            raise ApiError(400, f"'{name}' cannot be decoded ({type(err).__name__}: {err})") from err
        key = uuid.uuid4().hex[:12]
        with self._cache_lock:
            self._images[key] = (tensor, name)
            while len(self._images) > CACHED_IMAGES:
                self._images.popitem(last=False)
        return key

    def _image(self, key: str) -> tuple[torch.Tensor, str]:
        with self._cache_lock:
            if key not in self._images:
                raise ApiError(404, "this image is no longer held by the server; upload it again")
            self._images.move_to_end(key)
            return self._images[key]

    def rank(self, key: str, top_k: int = 5, classes: str = "all",
             gamma: float | None = None, top_attributes: int = 8) -> dict[str, Any]:
        """Top-k classes of an uploaded image and the rank of every added class."""
        tensor, name = self._image(key)
        if not 1 <= top_k <= 100:
            raise ApiError(400, f"top_k must lie in 1..100, got {top_k}")
        try:
            check_gamma(gamma, "gamma")  # -1e39 is finite, yet overflows the scores to infinity
        except UsageError as err:
            raise ApiError(400, str(err)) from err
        with self.model_lock:
            try:
                everything = self.predictor.predict(tensor, top_k=len(self.predictor.class_names),
                                                    classes=classes, gamma=gamma,
                                                    top_attributes=top_attributes,
                                                    gamma_given="given in the page")[0]
            except ValueError as err:  # the command's advice, in the page's words
                raise ApiError(400, str(err).replace(
                    "(--add-classes)", "(in the New class tab)")) from err
        ranked = everything["classes"]
        added = [c for c in ranked if c["group"] == "added"]
        return {"id": key, "image": name, "classes": ranked[:top_k], "added": added,
                "searched": len(ranked), "attributes": everything["attributes"],
                "calibration": everything["calibration"]}

    def attention(self, key: str, attribute: int) -> bytes:
        """PNG: the image and the attention of one attribute at each level over it."""
        p = self.predictor
        if not 0 <= attribute < len(p.attribute_names):
            raise ApiError(400, f"attribute must lie in 0..{len(p.attribute_names) - 1}")
        if not self.has_attention:
            raise ApiError(400, f"the {p.run.config.model.name} network has no attention maps")
        from mgmrn.viz import level_attention_maps, plot_attention

        tensor, name = self._image(key)
        batch = tensor.unsqueeze(0)
        with self.model_lock:  # one class: the attention does not depend on the classes
            scores = p.inference(batch, torch.arange(1), attention=True)
            strength = float(scores.attributes[0, attribute])
            maps = level_attention_maps(scores.output, tuple(batch.shape[-2:]), [attribute]).cpu()
        # a file of its own: two requests for one map (a page re-ranking as its pick lands) run
        # at once, and one must not remove the other's file
        path = self.scratch / f"attention-{key}-{attribute}-{uuid.uuid4().hex[:8]}.png"
        plot_attention(p.inference.pictures(batch)[0], maps[0], [p.attribute_names[attribute]],
                       list(scores.output.levels), path, attribute_values=[strength],
                       title=f"{Path(name).name}: where the model looks for "
                             f"{p.attribute_names[attribute]}")
        data = path.read_bytes()
        path.unlink()
        return data

    def add_class(self, request: dict[str, Any]) -> dict[str, Any]:
        """Add a class from ``{"name", "attributes": {name: value}}`` or ``{"name", "row"}``.

        ``row`` is pasted text: values in training attribute order (commas, spaces or tabs), or
        a CSV header naming the attributes and a line of values.
        """
        name = request.get("name", "")
        if not isinstance(name, str):
            raise ApiError(400, f"the class name must be text, got {json.dumps(name)}")
        name = name.strip()
        p = self.predictor
        if "row" in request:
            attributes = [self._parse_row(str(request["row"]), name)]
        elif isinstance(request.get("attributes"), dict):
            attributes = [request["attributes"]]
        else:
            raise ApiError(400, "give the class's attributes as 'attributes' or a pasted 'row'")
        with self.model_lock:
            try:
                index = p.add_classes([name], attributes)[0]
            except ValueError as err:
                raise ApiError(400, str(err).replace("add_classes: ", "")) from err
        return {"added": {"index": index, "name": name}, "classes": self.classes()}

    def remove_class(self, name: str) -> dict[str, Any]:
        with self.model_lock:
            try:
                self.predictor.remove_added_classes([name])
            except ValueError as err:
                raise ApiError(404, str(err)) from err
        return {"classes": self.classes()}

    def _parse_row(self, text: str, name: str) -> list[float]:
        lines = [line for line in text.strip().splitlines() if line.strip()]
        names = self.predictor.attribute_names
        if len(lines) == 2:  # a header and a row, columns by name in any order
            rows = list(csv.reader([f"class,{lines[0]}", f"{name or 'new'},{lines[1]}"]))
            header_line = 1
        elif len(lines) == 1:  # values in training attribute order
            cells = [c for c in lines[0].replace(",", " ").replace("\t", " ").split(" ") if c]
            if len(cells) != len(names):
                raise ApiError(400, f"the pasted row has {len(cells)} values; expected "
                                    f"{len(names)}, one per attribute in training order")
            rows, header_line = [["class", *names], [name or "new", *cells]], 0
        else:
            raise ApiError(400, "paste one row of values, or a header line and a row of values")
        try:
            table = parse_class_table(rows, "pasted row", names, first_line=header_line)
        except ValueError as err:
            raise ApiError(400, str(err)) from err
        return table.values[0].tolist()
