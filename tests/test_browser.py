"""What a person sees in a browser: the class page and a submission's report in headless
Chromium (Debian's `chromium` and `chromium-driver` packages), driven by Selenium.

Selenium because it is the W3C WebDriver reference client, packaged on PyPI and kept by the
browser vendors' own project, and Debian ships the matching chromedriver beside chromium, so no
driver or browser is ever downloaded. Screenshots are kept in $GRADER_ARTIFACTS (or the test's
tmp folder), printed by the test.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from batchlib import FakeEnv, make_fake_env
from conftest import unavailable

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1300,1000")
EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture
def browser(tmp_path: Path):  # type: ignore[no-untyped-def]
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        unavailable("headless Chromium is missing: apt-get install -y chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in (*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(f)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def artifacts(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    base = Path(os.environ.get("GRADER_ARTIFACTS") or tmp_path / "artifacts")
    d = base / request.node.name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    print(f"\nscreenshots in {d}")
    return d


def _class(fake: FakeEnv) -> Path:
    fake.submission("alice", {})
    fake.submission("bob", {"checks": {"ex1.list": "failed", "ex2.frees": "timed_out"}})
    fake.submission("carol", {"checks": {"global.load": "crashed"}, "reason": EVIL,
                              "log": [f"taskmonitor: {EVIL}"], "build_log": EVIL})
    fake.submission("dave", {"exit": 1})
    lst = fake.root / "list.csv"
    rows = ["path,student,name"] + [f"{fake.root / 'subs' / s},{s},{s.title()}"
                                    for s in ("alice", "bob", "dave")]
    rows.append(f'{fake.root / "subs" / "carol"},"{EVIL.replace(chr(34), chr(34) * 2)}",Carol')
    lst.write_text("\n".join(rows) + "\n")
    out = fake.root / "out"
    r = fake.batch(str(lst), "--out", str(out), "--quiet")
    assert r.returncode == 5, r.stderr  # dave: the grader failed
    return out


def _no_alert(driver) -> None:  # type: ignore[no-untyped-def]
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert  # noqa: B018 - a property that raises when no alert is open


def test_class_page_and_report_as_a_person_sees_them(browser, artifacts: Path,
                                                      tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    out = _class(make_fake_env(tmp_path))
    browser.get((out / "class.html").as_uri())
    _no_alert(browser)
    browser.save_screenshot(str(artifacts / "class.png"))
    assert browser.title.startswith("Class report: Fake lab")
    rows = browser.find_elements(By.CSS_SELECTOR, "#grades tbody tr")
    seen = {r.find_element(By.CSS_SELECTOR, "td").text: r.find_element(
        By.CSS_SELECTOR, "td.total").text for r in rows}
    assert seen == {"alice": "9", "bob": "4", EVIL: "7", "dave": ""}
    # The charts are drawn: every bar with students has a visible height on screen.
    figures = browser.find_elements(By.CSS_SELECTOR, "figure")
    assert len(figures) == 4 and all(f.is_displayed() for f in figures)
    bars = [b for b in browser.find_elements(By.CSS_SELECTOR, "#chart-total rect")
            if b.get_attribute("data-count") != "0"]
    assert len(bars) == 3 and all(b.rect["height"] > 5 and b.rect["width"] > 5 for b in bars)
    # Sorting: the script turned the headers into buttons; sort by total, twice.
    header = browser.find_element(By.XPATH, "//table[@id='grades']//th[starts-with(., 'Total')]")
    header.find_element(By.TAG_NAME, "button").click()
    totals = [r.find_element(By.CSS_SELECTOR, "td.total").text
              for r in browser.find_elements(By.CSS_SELECTOR, "#grades tbody tr")]
    assert totals == ["", "4", "7", "9"]
    header.find_element(By.TAG_NAME, "button").click()
    first = browser.find_element(By.CSS_SELECTOR, "#grades tbody tr td a")
    assert first.text == "alice"
    browser.save_screenshot(str(artifacts / "class-sorted.png"))
    # The link to a report works, and the report links back.
    first.click()
    assert browser.current_url.endswith("/report.html")
    _no_alert(browser)
    assert browser.find_element(By.ID, "total").text == "9/9"
    browser.save_screenshot(str(artifacts / "report-alice.png"))
    browser.find_element(By.ID, "class-link").click()
    assert browser.current_url == (out / "class.html").as_uri()
    # The crashed student's report shows the markup as text, and runs none of it.
    browser.find_element(By.XPATH, "//h3[@id='crashed']/following-sibling::ul[1]//a").click()
    _no_alert(browser)
    assert not browser.find_elements(By.CSS_SELECTOR, "img")
    assert EVIL in browser.find_element(By.TAG_NAME, "body").text
    assert browser.find_element(By.ID, "total").text == "7/9"
    browser.save_screenshot(str(artifacts / "report-crashed.png"))
    assert browser.execute_script("return document.scripts.length") == 0
