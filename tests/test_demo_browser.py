"""The demo in a real browser: Debian's Chromium, headless, driven by Playwright. Opens the page
served on 127.0.0.1, uploads / clicks examples, clicks, reads the results off the page, saves a
screenshot of each tab under the test's tmp dir, and checks that the page fetched nothing from
outside the machine (no fonts, CDNs or analytics)."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from urllib.parse import urlparse

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed (apt-get install chromium); CI installs it", allow_module_level=True)
if importlib.util.find_spec("gradio") is None:  # the server subprocess imports it
    pytest.skip("the demo needs gradio (pip install -e '.[dev]')", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra has it)")

from sslzoo import zoo  # noqa: E402

from . import _demo_server  # noqa: E402

EX = {p.name: p for p in zoo.example_images()}
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
        "--disable-default-apps", "--disable-features=Translate,OptimizationHints,MediaRouter"]
TIMEOUT_MS = 300_000  # generous: CI machines may be busy; each step normally takes well under a second


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    return _demo_server.shared(tmp_path_factory)


@pytest.fixture(scope="module")
def requests_seen():
    return []


@pytest.fixture(scope="module")
def page(server, requests_seen):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.set_default_timeout(TIMEOUT_MS)
        pg.on("request", lambda r: requests_seen.append(r.url))
        pg.goto(server.url)
        pg.get_by_role("tab", name="Rotation").wait_for()
        yield pg
        browser.close()


def _open_tab(page, name: str):
    page.get_by_role("tab", name=name, exact=True).click()


def _shot(page, tmp_path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    return path


def test_rotation_upload_turn_predict(page, tmp_path):
    _open_tab(page, "Rotation")
    page.locator("#rotation-upload input[type=file]").set_input_files(str(EX["fmnist-0-ankle-boot.png"]))
    page.locator("#rotation-turn label").filter(has_text="90°").first.click()
    page.get_by_role("button", name="Predict the rotation").click()
    summary = page.locator("#rotation-summary")
    summary.get_by_text("you turned it by 90°").wait_for()
    assert "says this image is turned by 90°" in " ".join(summary.inner_text().split())
    assert page.locator("#rotation-label").inner_text().split()[0] == "90°"  # the top class
    _shot(page, tmp_path, "rotation")


def test_jigsaw_shuffle_and_solve(page, tmp_path):
    _open_tab(page, "Jigsaw")
    page.locator("#jigsaw-upload input[type=file]").set_input_files(str(EX["fmnist-2-trouser.png"]))
    page.get_by_role("button", name="Shuffle randomly and solve").click()
    summary = page.locator("#jigsaw-summary")
    summary.get_by_text("Shuffled with permutation").wait_for()
    text = " ".join(summary.inner_text().split())
    index = text.split("#", 1)[1].split()[0]
    assert page.get_by_label("Permutation index").input_value() == index  # the drawn index is shown
    assert "#" in page.locator("#jigsaw-label").inner_text()
    _shot(page, tmp_path, "jigsaw")


def test_relative_patch(page, tmp_path):
    _open_tab(page, "Relative patch")
    page.locator("#relpatch-upload input[type=file]").set_input_files(str(EX["fmnist-0-ankle-boot.png"]))
    page.locator("#relpatch-position label").filter(has_text="bottom-right").first.click()
    page.get_by_role("button", name="Where is this patch?").click()
    page.locator("#relpatch-summary").get_by_text("puts the second patch").wait_for()
    assert page.get_by_label("Neighbour shown").input_value() == "bottom-right"
    _shot(page, tmp_path, "relpatch")


def test_classify_clicking_a_shipped_example(page, tmp_path):
    _open_tab(page, "Classify (linear probe)")
    page.locator("#classify-examples img[src*='fmnist-1-pullover']").first.click()  # the shipped example
    page.locator("#classify-upload img").first.wait_for()
    page.get_by_role("button", name="Classify", exact=True).click()
    page.locator("#classify-summary").get_by_text("Linear probe on frozen").wait_for()
    assert page.locator("#classify-label").inner_text().split("\n")[0] == "Pullover"
    _shot(page, tmp_path, "classify")


def test_models_tab_cards(page, tmp_path):
    _open_tab(page, "Models")
    card = page.locator("#model-card")
    card.get_by_text("Linear probe").first.wait_for()
    assert "model-index" not in card.inner_text()  # the YAML front matter is not rendered
    _shot(page, tmp_path, "models")


def test_bad_upload_shows_the_reason_not_a_traceback(page, tmp_path):
    notes = tmp_path / "notes.png"
    notes.write_text("a text file with an image's name")
    _open_tab(page, "Rotation")
    page.locator("#rotation-upload input[type=file]").set_input_files(str(notes))
    page.get_by_role("button", name="Predict the rotation").click()
    page.get_by_text("notes.png: not an image").first.wait_for()
    page.wait_for_timeout(600)  # let the toast finish fading in for the screenshot
    assert "says" not in page.locator("#rotation-summary").inner_text()  # no stale result under the error
    body = page.locator("body").inner_text()
    assert "Traceback" not in body and "File \"" not in body
    _shot(page, tmp_path, "error")


def test_the_page_fetched_nothing_from_outside(page, server, requests_seen):
    assert requests_seen, "the browser made no requests at all?"
    outside = sorted({u for u in requests_seen
                      if urlparse(u).scheme not in ("data", "blob") and urlparse(u).hostname not in ("127.0.0.1",)})
    assert not outside, f"the page fetched from outside the machine: {outside}"
    assert all(_demo_server.is_local(r) for r in server.connections())

