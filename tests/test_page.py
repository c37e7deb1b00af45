"""The page in a real browser (Debian's Chromium through Playwright): choose a photo, see the comparison
slider, download the result; and a file that is not a photo gets its reason shown."""

from __future__ import annotations

import os

import pytest
from PIL import Image

from koala import outputs
from tests.conftest import make_photo
from tests.test_service import LiveServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"the page test needs Debian's chromium at {CHROMIUM}"),
]


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    live = LiveServer(tiny_model_dir, "--workers", "1", "--queue", "2", sandbox=False)
    try:
        yield live.wait_ready()
    finally:
        live.stop()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the page test needs playwright (python)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(accept_downloads=True)
    opened = context.new_page()
    yield opened
    context.close()


def test_choose_a_photo_compare_and_download(server, page, tmp_path):
    photo = tmp_path / "old photo.jpg"
    photo.write_bytes(outputs.encode_image(make_photo(11, 180, 260), "JPEG"))
    page.goto(server.url + "/")
    assert page.title().startswith("Koala")

    page.set_input_files("#file", str(photo))
    page.wait_for_selector("#result:not([hidden])", timeout=30_000)
    assert page.is_hidden("#problem")
    assert page.locator("#after").evaluate("image => image.naturalWidth") == 260
    assert page.locator("#before").evaluate("image => image.naturalWidth") == 260

    page.locator("#slider").fill("20")  # the slider moves the split
    assert "80%" in page.locator("#before-clip").evaluate("element => element.style.clipPath")

    with page.expect_download() as download_info:
        page.click("#download")
    download = download_info.value
    assert download.suggested_filename == "old-photo-coloured.jpg"
    saved = tmp_path / "downloaded.jpg"
    download.save_as(saved)
    with Image.open(saved) as result:
        result.load()
        assert result.format == "JPEG" and result.size == (260, 180)


def test_a_text_file_gets_its_reason_shown(server, page, tmp_path):
    not_a_photo = tmp_path / "notes.png"
    not_a_photo.write_text("these are notes, not a photo")
    page.goto(server.url + "/")
    page.set_input_files("#file", str(not_a_photo))
    page.wait_for_selector("#problem:not([hidden])", timeout=30_000)
    assert "not a photo" in page.inner_text("#problem-text")
    assert page.is_hidden("#result")


def test_busy_is_shown_kindly_with_its_wait(server, page, tmp_path):
    photo = tmp_path / "photo.png"
    photo.write_bytes(outputs.encode_image(make_photo(12, 64, 64), "PNG"))
    busy = '{"error": "busy", "reason": "The colouriser is busy, try again in 7 s.", "status": 503}'
    page.route("**/api/colorize", lambda route: route.fulfill(
        status=503, headers={"Retry-After": "7", "Content-Type": "application/json"}, body=busy))
    page.goto(server.url + "/")
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("#problem:not([hidden])", timeout=30_000)
    assert "busy" in page.inner_text("#problem-text") and "7 s" in page.inner_text("#problem-text")
    assert page.is_disabled("#retry") and "Try again in" in page.inner_text("#retry")
