"""The explorer page in a real, headless Chromium driven by Selenium: upload a demo image, read the
predictions, add a class, see a refused upload, browse the run; screenshots of each step. Then what
a new user meets: errors in view, quick picks, no class group, the keyboard, a 420 px screen.

One browser and one server serve the whole module. Every wait is for a condition, with a limit
(:data:`WAIT`) far above what a loaded machine needs, never for a fixed time.

Needs Debian's ``chromium`` and ``chromium-driver`` packages and the ``selenium`` package (in the
``test`` extra); skipped with a message where they are missing. Screenshots go to the test's
temporary folder, or to ``$MGMRN_SCREENSHOTS`` when set.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mgmrn.data.synthetic.demo_draw import COLORS, SHAPES, draw_image
from mgmrn.inference.predictor import load
from mgmrn.serve import make_server

from ..helpers import checkpoint_with_data, make_run
from .page import HOLD_ONE_REQUEST, By, Keys, draw, idle, needs_browser, open_page, pick, shown, text, wait

pytestmark = needs_browser


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
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("MGMRN_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


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
    assert "1 added class," in text(browser, "model-info")
    assert "1 added classes" not in text(browser, "model-info")
    assert ", epoch 4 of " in text(browser, "model-info")  # saved after its 4th epoch (3 from 0)
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


def test_an_error_is_shown_in_view_of_the_button_that_caused_it(served, browser):
    server, _, _ = served
    open_page(browser, server, height=420)
    browser.find_element(By.ID, "tab-define").click()
    button = browser.find_element(By.ID, "add-paste")
    browser.execute_script("arguments[0].scrollIntoView({block: 'end'})", button)
    assert browser.execute_script("return window.scrollY") > 200  # the top is out of view
    button.click()
    wait(browser, lambda d: "paste one row of values" in text(d, "message"))
    top, bottom, height = browser.execute_script(
        "const r = document.getElementById('message').getBoundingClientRect();"
        "return [r.top, r.bottom, window.innerHeight]")
    assert 0 <= top < bottom <= height


def test_quick_picks_show_the_last_image_only(served, browser, tmp_path):
    server, _, _ = served
    first, second = draw(tmp_path, "star", "red"), draw(tmp_path, "circle", "blue")
    open_page(browser, server)
    pick(browser, first)
    wait(browser, lambda d: idle(d) and "red_star.png:" in shown(d)["status"])
    first_table = shown(browser)["table"]

    # the first image's attention map answers after the second image is picked and shown
    browser.execute_script(HOLD_ONE_REQUEST, "/api/attention/")
    pick(browser, first)
    wait(browser, lambda d: d.execute_script("return window.held !== null"))
    pick(browser, second)
    wait(browser, lambda d: "blue_circle.png:" in shown(d)["status"]
         and shown(d)["attentionOf"] == shown(d)["tableOf"])
    second_view = shown(browser)
    assert second_view["table"] != first_table
    browser.execute_script("window.held.release()")
    wait(browser, idle)
    assert shown(browser) == second_view

    # the first image's ranking answers after the second image is picked and shown
    browser.execute_script(HOLD_ONE_REQUEST, "/api/predict")
    pick(browser, first)
    wait(browser, lambda d: d.execute_script("return window.held !== null"))
    pick(browser, second)
    wait(browser, lambda d: shown(d)["tableOf"] not in (None, second_view["tableOf"])
         and shown(d)["attentionOf"] == shown(d)["tableOf"])
    second_view = shown(browser)
    browser.execute_script("window.held.release()")
    wait(browser, idle)
    assert shown(browser) == second_view and "blue_circle.png:" in second_view["status"]
    assert second_view["table"] != first_table


def test_a_busy_refusal_of_the_last_pick_stays_shown(served, browser, tmp_path):
    server, _, _ = served
    open_page(browser, server)
    browser.execute_script(HOLD_ONE_REQUEST, "/api/predict")
    pick(browser, draw(tmp_path, "star", "red"))  # answered, but held back from the page
    wait(browser, lambda d: d.execute_script("return window.held && window.held.answered"))
    busy, max_busy = server.busy, server.max_busy
    server.busy, server.max_busy = threading.BoundedSemaphore(1), 1
    other = socket.create_connection(server.server_address[:2])
    try:
        with server.explorer.model_lock:  # another client waits in the only place
            body = (tmp_path / "red_star.png").read_bytes()
            other.sendall(b"POST /api/predict?name=o.png HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Length: %d\r\n\r\n" % len(body) + body)
            wait(browser, lambda d: not server.busy.acquire(blocking=False) or server.busy.release())
            pick(browser, draw(tmp_path, "circle", "blue"))
            wait(browser, lambda d: "busy with 1 request;" in shown(d)["message"])
            browser.execute_script("window.held.release()")  # the first pick's late answer
            wait(browser, idle)
            other.close()  # and the other client leaves, giving its place up
            wait(browser, lambda d: server.busy.acquire(blocking=False))
            server.busy.release()
    finally:
        other.close()
        server.busy, server.max_busy = busy, max_busy
    view = shown(browser)
    assert "busy with 1 request;" in view["message"]
    assert view["status"] == "blue_circle.png was refused; no prediction yet."
    assert view["tableOf"] is None


def test_no_class_group_ticked_is_refused_and_a_typed_gamma_is_given_in_the_page(
        served, browser, tmp_path):
    server, _, _ = served
    open_page(browser, server)
    groups = [browser.find_element(By.ID, "set-" + g) for g in ("seen", "unseen", "added")]
    for box in groups:  # before any image: said at once
        box.click()
    assert "Tick at least one class group" in shown(browser)["message"]
    for box in groups:  # and unsaid when a group is ticked again
        box.click()
    assert shown(browser)["message"] == ""
    assert not browser.find_element(By.ID, "sets-note").is_displayed()
    pick(browser, draw(tmp_path, "star", "red"))
    wait(browser, lambda d: idle(d) and "red_star.png:" in shown(d)["status"])
    gamma = browser.find_element(By.ID, "gamma")
    gamma.send_keys("0.5", Keys.TAB)  # leaving the field is its change
    wait(browser, lambda d: idle(d) and "γ = 0.50, given in the page" in text(d, "calibration"))
    assert "--gamma" not in text(browser, "calibration")
    for group in ("seen", "unseen"):
        browser.find_element(By.ID, "set-" + group).click()
        wait(browser, idle)
    before = shown(browser)
    browser.find_element(By.ID, "set-added").click()
    wait(browser, idle)
    assert "Tick at least one class group" in shown(browser)["message"]
    assert browser.find_element(By.ID, "sets-note").is_displayed()
    assert shown(browser)["table"] == before["table"]  # nothing was searched
    pick(browser, draw(tmp_path, "circle", "blue"))
    wait(browser, idle)
    assert "Tick at least one class group" in shown(browser)["message"]
    assert shown(browser)["status"].startswith("blue_circle.png was refused; the results below are "
                                               "still those of red_star.png")
    browser.find_element(By.ID, "set-unseen").click()
    wait(browser, lambda d: idle(d) and shown(d)["message"] == "")
    unseen = browser.execute_script(
        "return state.info.classes.filter(c => c.group === 'unseen').length")
    assert f"red_star.png: {unseen} classes searched" in shown(browser)["status"]


def focus_by_tab(driver, is_target: str, presses: int = 40) -> None:
    """Press Tab until the script ``is_target`` (of ``document.activeElement``) holds."""
    for _ in range(presses):
        if driver.execute_script(f"const e = document.activeElement; return {is_target}"):
            return
        driver.switch_to.active_element.send_keys(Keys.TAB)
    raise AssertionError(f"Tab never reached an element where {is_target}")


def test_upload_and_attribute_chips_work_from_the_keyboard(served, browser, tmp_path):
    server, _, _ = served
    open_page(browser, server)
    browser.execute_script("""
        window.pickerOpened = 0;  // a file chooser cannot open headless: count the attempts
        document.getElementById('file-input').addEventListener('click', (e) => {
          window.pickerOpened += 1; e.preventDefault(); });""")
    focus_by_tab(browser, "e.id === 'drop-zone'")
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    browser.switch_to.active_element.send_keys(Keys.SPACE)
    assert browser.execute_script("return window.pickerOpened") == 2

    pick(browser, draw(tmp_path, "star", "red"))
    wait(browser, lambda d: idle(d) and d.find_elements(By.CSS_SELECTOR, "#attributes .chip"))
    for key in (Keys.ENTER, Keys.SPACE):
        focus_by_tab(browser, "e.classList.contains('chip') && !e.classList.contains('chosen')")
        chosen = browser.switch_to.active_element.get_attribute("data-index")
        browser.switch_to.active_element.send_keys(key)
        wait(browser, lambda d, a=chosen: idle(d) and d.find_element(
            By.ID, "attention-img").get_attribute("data-attribute") == a)
        assert browser.find_element(By.ID, "attention-select").get_attribute("value") == chosen


def test_no_horizontal_overflow_at_420_px(served, browser, tmp_path):
    server, _, _ = served
    open_page(browser, server, width=420, height=900)
    try:
        pick(browser, draw(tmp_path, "star", "red"))
        wait(browser, lambda d: idle(d) and "red_star.png:" in shown(d)["status"])
        for tab in ("classify", "define", "run"):
            browser.find_element(By.ID, "tab-" + tab).click()
            if tab == "run":
                wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#confusions tbody tr"))
                wait(browser, lambda d: d.execute_script(
                    "return [...document.querySelectorAll('#run-figures img')]"
                    ".every(i => i.complete && i.naturalWidth > 0)"))
            width, inner = browser.execute_script(
                "return [document.documentElement.scrollWidth, window.innerWidth]")
            assert inner == 420 and width <= inner, tab
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
