"""What the browser tests share: where Chromium is, the condition waits, and the page's parts read
in one go. Every wait is for a condition, with a limit (:data:`WAIT`) far above what a loaded
machine needs, never for a fixed time."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mgmrn.data.synthetic.demo_draw import COLORS, SHAPES, draw_image

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                "(pip install -e .[test])")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402, F401 (for the test modules)
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
WAIT = 180  # seconds; a condition is met in well under one on a quiet machine
needs_browser = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason=(
    "no headless browser: install Debian's chromium and chromium-driver packages "
    "(apt-get install chromium chromium-driver) to run the browser tests"))


# the page's fetch wrapped so that one answer is held back until released: races made in order
HOLD_ONE_REQUEST = """
    // The next request whose path starts with `prefix` is answered only when released.
    const prefix = arguments[0];
    window.held = null;
    window.realFetch = window.realFetch || window.fetch.bind(window);
    const send = window.realFetch;
    window.fetch = (path, options) => {
      if (window.held || !String(path).startsWith(prefix)) return send(path, options);
      const answer = send(path, options);
      return new Promise((resolve, reject) => {
        const held = { path: String(path), answered: false,
                       release: () => answer.then(resolve, reject) };
        answer.finally(() => { held.answered = true; }).catch(() => {});
        window.held = held;
      });
    };"""


def wait(driver, condition, timeout=WAIT):
    return WebDriverWait(driver, timeout, ignored_exceptions=(
        StaleElementReferenceException,)).until(lambda d: condition(d))


def text(driver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def open_page(driver, server, width: int = 1280, height: int = 1000) -> None:
    """The page afresh in a viewport of ``width`` x ``height``, with the model's info shown."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    driver.get(server.url)
    wait(driver, lambda d: "seen" in text(d, "model-info"))


def idle(driver) -> bool:
    """No request of the page is in flight."""
    return driver.find_element(By.ID, "main").get_attribute("aria-busy") == "false"


def draw(folder: Path, shape: str, color: str, name: str | None = None) -> Path:
    """A drawn shapes-set image of ``color`` and ``shape`` as a PNG in ``folder``."""
    path = folder / (name or f"{color}_{shape}.png")
    Image.fromarray(draw_image(np.random.default_rng(5), 96, shape, color, "dots", SHAPES[:5],
                               tuple(COLORS)[:5])).save(path)
    return path


def shown(driver) -> dict:
    """What the page shows of the current image: status, table, whose table and attention, the
    calibration line and the message."""
    return driver.execute_script("""
        return {status: document.getElementById('status').textContent,
                table: document.querySelector('#predictions tbody').innerText,
                tableOf: document.getElementById('predictions').dataset.image,
                attentionOf: document.getElementById('attention-img').dataset.image,
                calibration: document.getElementById('calibration').textContent,
                message: document.getElementById('message').classList.contains('hidden') ? ''
                         : document.getElementById('message-text').textContent}""")


def pick(driver, image: Path) -> None:
    driver.find_element(By.ID, "file-input").send_keys(str(image))
