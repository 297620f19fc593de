"""The browser the browser tests share: one headless Chromium per module."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def browser():
    from selenium.common.exceptions import WebDriverException

    from .page import CHROMIUM, DRIVER, WAIT, webdriver

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
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    yield driver
    driver.quit()
