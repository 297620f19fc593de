"""The explorer page in a real, headless Chromium driven by Selenium: upload a demo image, read the
predictions, add a class, see a refused upload, browse the run; screenshots of each step.

Needs Debian's ``chromium`` and ``chromium-driver`` packages and the ``selenium`` package (in the
``test`` extra); skipped with a message where they are missing. Screenshots go to the test's
temporary folder, or to ``$MGMRN_SCREENSHOTS`` when set.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mgmrn.data.demo_draw import COLORS, SHAPES, draw_image
from mgmrn.predict import load
from mgmrn.serve import make_server

from .helpers import checkpoint_with_data, make_run

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                "(pip install -e .[test])")
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason=(
    "no headless browser: install Debian's chromium and chromium-driver packages "
    "(apt-get install chromium chromium-driver) to run the browser tests"))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    checkpoint, data = checkpoint_with_data(root)
    run = make_run(root / "run", True, data / "images" / "green_square" / "0.png")
    server = make_server(checkpoint, run, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, checkpoint, root
    server.shutdown()
    server.server_close()
    server.explorer.close()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,1000"):
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER),
                                  options=options)
    except WebDriverException as err:
        pytest.skip(f"headless Chromium ({CHROMIUM}) did not start: {err.msg}")
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("MGMRN_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def wait(driver, condition, timeout=60):
    return WebDriverWait(driver, timeout).until(lambda d: condition(d))


def text(driver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def table_names(driver) -> list[str]:
    """The class column, read in one go (the page replaces the rows as results come in)."""
    return driver.execute_script("return [...document.querySelectorAll('#predictions "
                                 ".class-name')].map(c => c.textContent)")


def screenshot(driver, folder: Path, name: str) -> Path:
    path = folder / name
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000  # a rendered page, not an empty canvas
    return path


def test_the_page_in_a_browser(served, browser, shots, tmp_path):
    server, checkpoint, _ = served
    image = tmp_path / "red_star.png"
    pixels = draw_image(np.random.default_rng(3), 96, "star", "red", "dots", SHAPES[:5],
                        tuple(COLORS)[:5])
    Image.fromarray(pixels).save(image)

    browser.get(server.url)
    wait(browser, lambda d: "seen" in text(d, "model-info"))
    browser.find_element(By.ID, "file-input").send_keys(str(image))
    wait(browser, lambda d: len(table_names(d)) == 5)
    expected = load(checkpoint).predict(image, top_k=5)[0]
    assert table_names(browser) == [c["name"] for c in expected["classes"]]
    assert "γ = 0.00, none stored in the checkpoint" in text(browser, "calibration")
    wait(browser, lambda d: d.execute_script(
        "const i = document.getElementById('attention-img'); return i.complete && i.naturalWidth"))
    screenshot(browser, shots, "1_prediction.png")

    browser.find_element(By.ID, "tab-define").click()
    browser.find_element(By.ID, "new-name").send_keys("purple_star")
    browser.find_element(By.ID, "attr-search").send_keys("color")
    hidden = browser.execute_script(
        "return [...document.querySelectorAll('#sliders .slider.hidden input')]"
        ".map(i => i.dataset.name)")
    assert hidden == ["shape_circle", "shape_square"]
    browser.execute_script("""
        for (const [name, value] of [['shape_circle', 1], ['color_blue', 0.5], ['color_red', 0.5]]) {
          const input = [...document.querySelectorAll('#sliders input')]
            .find(i => i.dataset.name === name);
          input.value = value; input.dispatchEvent(new Event('input'));
        }""")
    browser.find_element(By.ID, "add-class").click()
    wait(browser, lambda d: "purple_star" in text(d, "added-list"))
    wait(browser, lambda d: "purple_star: rank" in text(d, "define-rank"))
    assert "1 added classes" in text(browser, "model-info")
    screenshot(browser, shots, "2_new_class.png")

    browser.find_element(By.ID, "tab-classify").click()
    top = browser.find_element(By.ID, "top-k")
    top.clear()
    top.send_keys("7")
    browser.execute_script("document.getElementById('top-k').dispatchEvent(new Event('change'))")
    wait(browser, lambda d: "purple_star" in table_names(d))
    assert "purple_star: rank" in text(browser, "added-ranks")
    screenshot(browser, shots, "3_ranked_with_new_class.png")

    notes = tmp_path / "notes.txt"
    notes.write_text("this is not an image")
    browser.find_element(By.ID, "file-input").send_keys(str(notes))
    wait(browser, lambda d: "'notes.txt' is not an image" in text(d, "message"))
    screenshot(browser, shots, "4_refused_upload.png")

    assert "the results below are still those of red_star.png" in text(browser, "status")
    browser.set_window_size(1280, 1900)  # the whole run page in one screenshot
    browser.find_element(By.ID, "tab-run").click()
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#confusions tbody tr")) == 1)
    wait(browser, lambda d: d.execute_script(
        "return [...document.querySelectorAll('#run-figures img, #confusions img')]"
        ".every(i => i.complete && i.naturalWidth > 0)"))
    assert "green_square" in text(browser, "confusions")
    screenshot(browser, shots, "5_run.png")
