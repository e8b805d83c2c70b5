"""`genie play` in a real headless browser (Debian chromium driven by Playwright) on a toy run: load the page,
press keys and see frames change, remap a key, rewind, reset, upload a start image, download recordings."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from play_helpers import running_server, write_untrained_run

from genie_jax.play.server import make_app
from genie_jax.play.world import PlayWorld

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
WAIT_MS = 30_000

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tiny_data, tmp_path_factory):
    run = write_untrained_run(tmp_path_factory.mktemp("play") / "run", tiny_data)
    world = PlayWorld.load(run)  # the dataset comes from the run's record, as `genie play --run RUN` finds it
    world.warm_up()
    return world


def test_world_loads_clips_and_suggests_a_mapping(world, tiny_data):
    assert world.clips is not None and len(world.clips) > 0
    assert world.sim.num_actions == 4 and (world.sim.height, world.sim.width) == (32, 32)
    assert set(world.mapping) == {"left", "right", "up", "down"}
    assert any(a is not None for a in world.mapping.values())  # platformer clips have true actions
    assert len(world.labels) == 4 and any(world.labels)


def test_sessions_are_independent_worlds(world):
    a, b = world.new_simulator(1), world.new_simulator(2)
    start = world.clips[0]["frames"][:1]
    a.reset(start)
    b.reset(start)
    before = b.state()
    for action in (0, 1, 2):
        a.step(action)
    assert b.state() is before  # stepping one world leaves the others untouched
    with pytest.raises(RuntimeError, match="call reset"):
        world.sim.state()  # the template itself is never started


def canvas_png(page) -> bytes:
    url = page.eval_on_selector("#screen", "canvas => canvas.toDataURL('image/png')")
    return base64.b64decode(url.split(",", 1)[1])


def wait_frame(page, index: int) -> bytes:
    page.wait_for_selector(f'#screen[data-frame="{index}"]', timeout=WAIT_MS)
    return canvas_png(page)


@pytest.mark.skipif(not CHROMIUM.exists(),
                    reason=f"{CHROMIUM} is absent: install Debian chromium (apt-get install chromium; .ci/run does)")
def test_play_in_a_headless_browser(world, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra: pip install .[test]")
    with running_server(make_app(world)) as port, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            page = browser.new_page(accept_downloads=True)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda line: errors.append(line.text) if line.type == "error" else None)  # CSP too
            page.goto(f"http://127.0.0.1:{port}/")
            start = wait_frame(page, 0)  # a random clip starts by itself
            assert page.text_content("#start-name").startswith("clip ")

            page.keyboard.press("2")  # latent action 1
            first = wait_frame(page, 1)
            assert first != start
            page.select_option("#map-right", "3")  # remap the right arrow on the page
            page.keyboard.press("ArrowRight")
            second = wait_frame(page, 2)
            assert second != first
            assert page.text_content("#history-ids") == "--actions 1,3"
            assert page.locator("#history .chip").count() == 2
            assert float(page.text_content("#generate-ms")) >= 0

            page.keyboard.press("Backspace")  # rewind: exactly the frame before comes back
            assert wait_frame(page, 1) == first
            assert page.text_content("#history-ids") == "--actions 1"

            page.keyboard.press("9")  # beyond |A| = 4: refused on the page, nothing sent
            assert "only 4 latent actions" in page.text_content("#message")

            with page.expect_download(timeout=WAIT_MS) as download:
                page.click("#download-gif")
            with Image.open(download.value.path()) as gif:
                assert gif.n_frames == 2 and gif.size == (256, 256)  # the start frame and one step, upscaled
            with page.expect_download(timeout=WAIT_MS) as download:
                page.click("#download-mp4")
            with av.open(str(download.value.path())) as container:
                assert sum(1 for _ in container.decode(video=0)) == 2

            image = tmp_path / "start.png"
            Image.fromarray(np.tile(np.arange(0, 256, 4, dtype=np.uint8)[:, None, None], (1, 48, 3))).save(image)
            page.set_input_files("#upload", str(image))
            uploaded = wait_frame(page, 0)
            assert page.text_content("#start-name") == "upload" and uploaded not in (start, first)
            with Image.open(io.BytesIO(uploaded)) as shown:
                assert shown.size == (32, 32)
            page.keyboard.press("1")
            wait_frame(page, 1)
            page.keyboard.press("r")  # reset: back to the uploaded start
            assert wait_frame(page, 0) == uploaded
            assert errors == []
        finally:
            browser.close()

