"""The web page of `vidstyle serve` in a real browser: Debian's headless Chromium driven by Playwright.

Playwright's own browser download is not used (CI has no route to it): the system's /usr/bin/chromium is.
Skipped, saying why, where either is missing; `.ci/run` installs Chromium.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ffmpeg
from test_serve import TINY, ServeProcess

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
if not CHROMIUM.exists() and shutil.which("chromium") is None:
    pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium), as .ci/run does",
                allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    executable = str(CHROMIUM) if CHROMIUM.exists() else shutil.which("chromium")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def clip(media: Path) -> Path:
    """5 frames of ffmpeg's test picture at 64x48, H.264 as browsers play it."""
    out = media / "browser_clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=0.5", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           str(out))
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    served = ServeProcess(tmp_path_factory.mktemp("browser")).start()
    yield served
    served.stop()


def test_upload_progress_and_playback(browser, site: ServeProcess, clip: Path) -> None:  # noqa: ANN001
    page = browser.new_page()
    page.goto(site.url + "/")
    page.wait_for_selector("#styles input[value=starry-night]:checked", state="attached")
    page.set_input_files("#input", str(clip))
    page.click("details summary")  # the iteration fields are folded away
    for name in ("size", "iters", "first_iters"):
        page.fill(f"#{name}", TINY[name])
    page.select_option("#flow", "none")
    page.click("#submit")
    page.wait_for_url("**/jobs/*")
    # The bar reaches 100 % when the last frame is painted, and the job is done once the video is written after it.
    page.wait_for_function("document.getElementById('state').textContent === 'done'", timeout=240_000)
    assert page.text_content("#percent") == "100 %"
    assert page.text_content("#frames") == "· frame 5 of 5"
    # The finished video plays in the page: it has decoded frames and its clock moves.
    page.wait_for_function("(() => { const v = document.getElementById('video');"
                           " return !v.hidden && v.readyState >= 2 && v.currentTime > 0; })()", timeout=30_000)
    assert page.eval_on_selector("#video", "v => v.videoWidth") == 64
    page.goto(site.url + "/")
    page.wait_for_selector("#gallery a img")  # the creation is in the gallery
    page.close()


def test_refused_upload_shows_the_reason(browser, site: ServeProcess, tmp_path: Path) -> None:  # noqa: ANN001
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    page = browser.new_page()
    page.goto(site.url + "/")
    page.set_input_files("#input", str(text))
    page.click("#submit")
    page.wait_for_function("document.getElementById('error').textContent.includes('not a video or image')")
    assert page.url.rstrip("/") == site.url
    page.close()


def test_an_answer_that_is_no_json_is_shown_by_its_status(browser, site: ServeProcess,  # noqa: ANN001
                                                           clip: Path) -> None:
    """A proxy's error page (or a server that failed before the API answered) in place of the API's JSON: the page
    said "Not queued: Unexpected token 'I', ... is not valid JSON"."""
    page = browser.new_page()
    page.route("**/api/jobs", lambda route: route.fulfill(status=502, content_type="text/html",
                                                          body="<html><body>Bad Gateway</body></html>"))
    page.goto(site.url + "/")
    page.wait_for_selector("#styles input[value=starry-night]:checked", state="attached")
    page.set_input_files("#input", str(clip))
    page.click("#submit")
    page.wait_for_function("document.getElementById('error').textContent.startsWith('Not queued')")
    assert page.inner_text("#error") == "Not queued: the server answered 502 Bad Gateway"
    page.close()


def test_a_delete_that_fails_says_why_on_a_line_of_its_own(browser, site: ServeProcess,  # noqa: ANN001
                                                            clip: Path) -> None:
    """The answer of a delete that failed went to the job's own error line (rewritten by each progress event), and
    one that never reached the server was an unhandled rejection: nothing was shown."""
    job = site.submit(clip, **TINY).json()
    site.wait(job["id"], lambda j: j["state"] == "done")
    page = browser.new_page()
    page.goto(site.url + job["urls"]["page"])
    page.wait_for_function("document.getElementById('state').textContent === 'done'")
    page.route("**/api/jobs/*", lambda route: route.fulfill(status=500, content_type="application/json",
                                                            body='{"detail": "the disk said no", "field": null}')
               if route.request.method == "DELETE" else route.continue_())
    page.click("#delete")
    page.wait_for_function("document.getElementById('action-error').textContent !== ''")
    assert page.inner_text("#action-error") == "Not deleted: the disk said no"
    page.unroute("**/api/jobs/*")
    page.route("**/api/jobs/*", lambda route: route.abort() if route.request.method == "DELETE"
               else route.continue_())
    page.click("#delete")
    page.wait_for_function("document.getElementById('action-error').textContent.startsWith('Not deleted: ') && "
                           "!document.getElementById('action-error').textContent.includes('disk said')")
    assert page.url.endswith(job["urls"]["page"]) and site.job(job["id"])["state"] == "done"
    page.close()


def test_the_api_page_works_without_internet(browser, site: ServeProcess) -> None:  # noqa: ANN001
    page = browser.new_page()
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))
    page.goto(site.url + "/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=30_000)  # Swagger UI drew the operations from the schema
    assert "/api/jobs/{job_id}/preview" in page.inner_text("body")
    assert fetched and all(url.startswith(site.url) for url in fetched), [u for u in fetched
                                                                           if not u.startswith(site.url)]
    response = page.goto(site.url + "/redoc")  # ReDoc's script asks a CDN for a logo: not offered
    assert response is not None and response.status == 404
    page.close()


def test_without_javascript_the_pages_say_so_instead_of_a_form_that_sends_nothing(browser, site: ServeProcess,
                                                                                   clip: Path) -> None:  # noqa: ANN001
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(site.url + "/")
    assert not page.is_visible("#create"), "a form that cannot send the file or pick a style"
    assert "needs JavaScript" in page.inner_text("main") and page.is_visible("noscript a[href='/docs']")
    job = site.submit(clip).json()
    page.goto(site.url + job["urls"]["page"])
    assert "needs JavaScript" in page.inner_text("main")
    context.close()

    page = browser.new_page()  # and with it, the form is there and the notice is not
    page.goto(site.url + "/")
    page.wait_for_selector("#create", state="visible")
    assert "needs JavaScript" not in page.inner_text("main")
    page.close()


def test_the_pages_load_without_a_console_error(browser, site: ServeProcess) -> None:  # noqa: ANN001
    """A page without an icon of its own made every browser ask for /favicon.ico and log its 404 as an error."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    icons: list[int] = []
    page.on("response", lambda response: icons.append(response.status) if "favicon" in response.url else None)
    page.goto(site.url + "/")
    page.wait_for_selector("#styles input[value=starry-night]:checked", state="attached")
    page.wait_for_load_state("networkidle")
    assert errors == [] and icons == [200], (errors, icons)
    page.close()
