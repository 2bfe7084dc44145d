"""The HTML site in a real browser (headless Chromium through selenium): tables and plots render, legend toggles
work, and a `<script>` / `onerror=` planted in an autointerp context and explanation shows as text and never runs.

Needs Debian's `chromium` and `chromium-driver` (or any chromium + chromedriver on PATH) and selenium (the `test`
extra); skipped with a one-line reason without them, except under DECOMPBENCH_CI=1 (.ci/run), where that skip is a
failure (tests/conftest.py). The screenshots go to `$DECOMPBENCH_SCREENSHOTS` (a directory),
else to the test's temporary directory; their paths are printed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.report_helpers import bench, copy_run, edit_result, inject

try:
    from selenium import webdriver
except ImportError:  # a skip (a failure in CI) below, not an error at collection
    webdriver = None
BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
DRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.ci_required,
    pytest.mark.skipif(webdriver is None, reason="selenium is not installed (pip install -e .[test])"),
    pytest.mark.skipif(BROWSER is None or DRIVER is None,
                       reason="no chromium + chromedriver on PATH (apt-get install chromium chromium-driver)"),
]


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1800"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()


def test_site_renders_and_injected_script_does_not_run(browser, tmp_path):
    from selenium.webdriver.common.by import By

    run = copy_run(tmp_path / "smoke")
    edit_result(run, "sae-topk", "autointerp", inject)
    out = tmp_path / "site"
    made = bench("report", "--results", str(run), "--format", "html", "--out", str(out),
                 "--history", str(tmp_path / "none.sqlite"))
    assert made.returncode == 0, made.stderr
    shots = Path(os.environ.get("DECOMPBENCH_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)

    browser.get((out / "index.html").as_uri())
    links = browser.find_elements(By.CSS_SELECTOR, "table a")
    assert [a.text for a in links] == ["smoke"]
    links[0].click()
    title = browser.title
    assert title == "decompbench · smoke"

    # the leaderboard: rows of methods with values, the best marked
    table = browser.find_element(By.CSS_SELECTOR, "table.leaderboard")
    names = [td.text for td in table.find_elements(By.CSS_SELECTOR, "td.name")]
    assert "sae-topk" in names and "pca" in names
    assert table.find_elements(By.CSS_SELECTOR, "td.best")
    # the plots: laid out with real size, points drawn
    charts = browser.find_elements(By.CSS_SELECTOR, "svg.chart")
    assert len(charts) >= 6
    for chart in charts:
        assert chart.size["width"] > 300 and chart.size["height"] > 200
    assert all(c.find_elements(By.CSS_SELECTOR, "circle.point") for c in charts)
    # the inlined script runs (under the page's Content-Security-Policy): a legend click hides its series
    chart = charts[0]
    series = chart.find_element(By.CSS_SELECTOR, ".series[data-series='0']")
    chart.find_element(By.CSS_SELECTOR, ".legend-item[data-series='0']").click()
    assert "off" in series.get_attribute("class") and not series.is_displayed()
    chart.find_element(By.CSS_SELECTOR, ".legend-item[data-series='0']").click()
    assert "off" not in series.get_attribute("class")

    # the payloads: shown as text, never run
    feature = next(d for d in browser.find_elements(By.CSS_SELECTOR, "details.feature")
                   if "__pwned" in d.find_element(By.TAG_NAME, "summary").text)
    browser.execute_script("arguments[0].open = true; arguments[0].scrollIntoView();", feature)
    assert "<script>window.__pwned = 1" in feature.find_element(By.CSS_SELECTOR, ".explanation").text
    context = feature.find_element(By.CSS_SELECTOR, "li.context").text
    assert "<script>window.__pwned = 1" in context and "onerror=" in context
    assert feature.find_element(By.CSS_SELECTOR, "li.context mark").text.startswith("<img src=x onerror=")
    assert not feature.find_elements(By.CSS_SELECTOR, "img, script")
    assert browser.execute_script("return window.__pwned === undefined")
    assert browser.title == title
    path = shots / "report-autointerp.png"
    browser.save_screenshot(str(path))
    browser.execute_script("window.scrollTo(0, 0)")
    top = shots / "report-top.png"
    browser.save_screenshot(str(top))
    print(f"screenshots: {top} {path}")
