"""The explorer page in headless Chromium where answers race and names are long: a refused pick
keeps a table and a map of one image, a γ changed while a pick loads, a γ that would overflow,
long names at 420 px, classes named "." or "..".

Answers are held back in the page (its ``fetch`` wrapped) to order them; every wait is for a
condition, with a limit far above what a loaded machine needs, never for a fixed time. Needs
Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package; skipped without them.
"""

from __future__ import annotations

import json
import threading

import pytest

from mgmrn.serve import make_server

from ..helpers import checkpoint_with_data, make_run
from .page import HOLD_ONE_REQUEST, By, Keys, draw, idle, needs_browser, open_page, pick, shown, text, wait

pytestmark = needs_browser


LONG_CLASS = "a_class_name_of_fifty_six_characters_with_no_space_in_it"  # 56
LONG_FILE = "a_photo_file_name_of_sixty_one_characters_without_spaces.png"  # 61


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("races")
    checkpoint, data = checkpoint_with_data(root)
    example = data / "images" / "green_square" / "0.png"
    run = make_run(root / "run", True, example)
    results = json.loads((run / "results.json").read_text())
    results["unseen_confusions"][0]["examples"] = [str(example)] * 3  # three side by side
    (run / "results.json").write_text(json.dumps(results))
    server = make_server(checkpoint, run, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()
    server.explorer.close()


def held(driver) -> bool:
    return driver.execute_script("return window.held !== null")


def test_a_refused_pick_leaves_the_table_and_the_map_of_one_image(served, browser, tmp_path):
    first, second = draw(tmp_path, "star", "red"), draw(tmp_path, "circle", "blue")
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    open_page(browser, served)
    pick(browser, first)
    wait(browser, lambda d: idle(d) and "red_star.png:" in shown(d)["status"]
         and shown(d)["attentionOf"] == shown(d)["tableOf"])
    # the second image's table is shown, its map's answer held back; then a file that is refused
    browser.execute_script(HOLD_ONE_REQUEST, "/api/attention/")
    pick(browser, second)
    wait(browser, lambda d: held(d) and "blue_circle.png:" in shown(d)["status"])
    pick(browser, notes)
    wait(browser, lambda d: "'notes.txt' is not an image" in shown(d)["message"])
    browser.execute_script("window.held.release()")
    wait(browser, lambda d: idle(d) and d.execute_script("return window.held.answered"))
    view = shown(browser)
    assert view["attentionOf"] == view["tableOf"] != ""
    assert view["status"] == ("notes.txt was refused; the results below are still those of "
                              "blue_circle.png.")


def test_changing_gamma_while_a_pick_loads_keeps_the_pick(served, browser, tmp_path):
    open_page(browser, served)
    browser.execute_script(HOLD_ONE_REQUEST, "/api/predict")
    pick(browser, draw(tmp_path, "star", "red"))
    wait(browser, held)
    browser.find_element(By.ID, "gamma").send_keys("0.5", Keys.TAB)  # its change, mid-pick
    browser.execute_script("window.held.release()")
    wait(browser, lambda d: idle(d) and d.execute_script("return window.held.answered"))
    view = shown(browser)
    assert view["status"].startswith("red_star.png:") and view["tableOf"]
    assert "γ = 0.50, given in the page" in view["calibration"] and view["message"] == ""


def test_a_gamma_that_would_overflow_the_scores_is_refused_in_words(served, browser, tmp_path):
    open_page(browser, served)
    pick(browser, draw(tmp_path, "star", "red"))
    wait(browser, lambda d: idle(d) and "red_star.png:" in shown(d)["status"])
    before = shown(browser)
    browser.find_element(By.ID, "gamma").send_keys("-1e39", Keys.TAB)
    wait(browser, lambda d: idle(d) and shown(d)["message"] != "")
    view = shown(browser)
    assert view["message"] == "gamma must be a finite number from -10000 to 10000, got -1e+39"
    assert view["status"] == ("The change was refused; the results below are still those shown "
                              "before it (red_star.png).")
    assert view["table"] == before["table"] and view["calibration"] == before["calibration"]
    browser.find_element(By.ID, "tab-define").click()
    names = browser.execute_script("return state.info.attributes")
    browser.find_element(By.ID, "new-name").send_keys("huge")
    browser.find_element(By.ID, "paste-row").send_keys(
        " ".join(["3e38", *["1"] * (len(names) - 1)]))
    browser.find_element(By.ID, "add-paste").click()
    wait(browser, lambda d: "expected a number from -1e+06 to 1e+06, got '3e38'"
         in shown(d)["message"])


def test_long_names_fit_a_420_px_screen(served, browser, tmp_path):
    row = ",".join("1" for _ in served.explorer.predictor.attribute_names)
    served.explorer.add_class({"name": LONG_CLASS, "row": row})
    try:
        open_page(browser, served, width=420, height=900)
        top = browser.find_element(By.ID, "top-k")
        top.clear()
        top.send_keys("100")
        pick(browser, draw(tmp_path, "star", "red", LONG_FILE))
        wait(browser, lambda d: idle(d) and LONG_FILE in shown(d)["status"]
             and LONG_CLASS in shown(d)["table"])
        for tab in ("classify", "define", "run"):
            browser.find_element(By.ID, "tab-" + tab).click()
            if tab == "run":
                wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#confusions tbody tr"))
                wait(browser, lambda d: d.execute_script(
                    "return [...document.querySelectorAll('#run-figures img, #confusions img')]"
                    ".every(i => i.complete && i.naturalWidth > 0)"))
            width, inner = browser.execute_script(
                "return [document.documentElement.scrollWidth, window.innerWidth]")
            assert inner == 420 and width <= inner, tab
        browser.find_element(By.ID, "tab-classify").click()
        # every column of the ranking in view, not scrolled off to the right inside the table
        assert browser.execute_script(
            "const t = document.getElementById('predictions'); return t.scrollWidth <= t.clientWidth")
        browser.find_element(By.ID, "tab-define").click()
        clipped = browser.execute_script(
            "return [...document.querySelectorAll('#sliders label, #added-list li')]"
            ".filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.textContent)")
        assert clipped == []
        browser.find_element(By.ID, "tab-run").click()
        heights = browser.execute_script("return [...document.querySelectorAll("
                                         "'#confusions tbody tr')].map(r => r.offsetHeight)")
        assert heights and max(heights) <= 100
    finally:
        served.explorer.remove_class(LONG_CLASS)
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_classes_named_dot_and_dot_dot_can_be_removed_from_the_page(served, browser):
    open_page(browser, served)
    browser.find_element(By.ID, "tab-define").click()
    names = browser.execute_script("return state.info.attributes")
    for name in (".", ".."):
        field = browser.find_element(By.ID, "new-name")
        field.clear()
        field.send_keys(name)
        paste = browser.find_element(By.ID, "paste-row")
        paste.clear()
        paste.send_keys(" ".join("1" for _ in names))
        browser.find_element(By.ID, "add-paste").click()
        wait(browser, lambda d, n=name: f"Added class '{n}'." in shown(d)["message"])
    for _ in range(2):
        count = len(browser.find_elements(By.CSS_SELECTOR, "#added-list button"))
        browser.find_element(By.CSS_SELECTOR, "#added-list button").click()
        wait(browser, lambda d, c=count: idle(d) and len(
            d.find_elements(By.CSS_SELECTOR, "#added-list button")) == c - 1)
    assert text(browser, "added-list") == "none yet"
    assert not shown(browser)["message"].startswith(("no added class", "nothing at"))
    assert len(served.explorer.predictor.classes.added) == 0
