"""The live page in a real headless Chromium (Debian's `chromium`, driven by Playwright; CI
installs it in .ci/run): it loads, frames arrive, `d` and `l` move the camera as the frame
headers show, recording gives an MP4 and a camera file, and a screenshot is taken."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from _fake_world_model import FakeWorldModel
from _serve_fixtures import running_server

from sanawm.camera import load_trajectory
from sanawm.serve.config import ServeConfig
from sanawm.video import read_video

CHROMIUM = "/usr/bin/chromium"
sync_api = pytest.importorskip("playwright.sync_api")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)


def _pose(page) -> np.ndarray:
    return np.array(page.evaluate("window.sanawm.lastHeader.c2w")).reshape(4, 4)


def _frames(page) -> int:
    return page.evaluate("window.sanawm.frames")


def _hold(page, key: str, frames_to_wait: int) -> None:
    """Hold a key until the page has received `frames_to_wait` more frames, then let go and
    wait for the camera to settle (the last control covers 8 frames)."""
    start = _frames(page)
    page.keyboard.down(key)
    page.wait_for_function(f"window.sanawm.frames >= {start + frames_to_wait}", timeout=20_000)
    page.keyboard.up(key)
    after = _frames(page)
    page.wait_for_function(f"window.sanawm.frames >= {after + 16}", timeout=20_000)


def test_page_plays_moves_records_and_screenshots(tmp_path):
    # 40 frames/s: a 16-frame action lasts longer than the page's 250 ms repeat.
    model = FakeWorldModel(size=(64, 64), first_chunk=5, chunk=4, chunk_delay_s=0.1)
    with running_server(model, ServeConfig(data_dir=tmp_path / "data")) as (host, _):
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1100, "height": 760}, accept_downloads=True)
                errors, downloads = [], {}
                page.on("pageerror", lambda err: errors.append(str(err)))
                page.on("download", lambda d: downloads.__setitem__(d.suggested_filename, d))
                page.goto(f"http://{host}/")
                page.wait_for_function("document.getElementById('model').textContent.includes('fake')")
                page.click("#start")
                page.wait_for_function("window.sanawm.frames >= 10", timeout=20_000)
                np.testing.assert_allclose(_pose(page), np.eye(4), atol=1e-9)  # no input: still

                # Strafe right: +x, heading unchanged. Held for 40 frames (1 s), longer than one
                # 16-frame action: the page repeats it, so the camera moves in one unbroken run.
                _hold(page, "d", 40)
                moved = _pose(page)
                assert abs(moved[2, 3]) < 1e-6
                np.testing.assert_allclose(moved[:3, :3], np.eye(3), atol=1e-9)
                x = np.array(page.evaluate("window.sanawm.headers.map(h => h.c2w[3])"))
                steps = np.flatnonzero(np.diff(x) > 1e-9)
                assert len(steps) >= 40 and np.all(np.diff(steps) == 1), steps  # no pause while held
                np.testing.assert_allclose(np.diff(x)[steps], 0.05, atol=1e-6)

                page.click("#record")
                _hold(page, "l", 12)  # yaw right: the forward axis turns toward +x
                turned = _pose(page)
                assert turned[0, 2] > 0.1 and turned[0, 3] == pytest.approx(moved[0, 3])
                assert moved[0, 3] > 0.05 * 40
                page.click("#record")
                page.wait_for_function("document.querySelectorAll('#downloads a').length === 2", timeout=20_000)
                page.wait_for_timeout(300)  # the second click's download event

                readout = {k: page.text_content(f"#{k}") for k in ("fps", "latency", "index")}
                assert readout["fps"] != "–" and readout["latency"].endswith("ms"), readout
                shot = tmp_path / "page.png"
                page.screenshot(path=str(shot), full_page=True)
                keep = os.environ.get("SANAWM_SCREENSHOT")
                if keep:
                    shutil.copy(shot, keep)
                assert shot.stat().st_size > 10_000
                indices = page.evaluate("window.sanawm.headers.map(h => h.index)")
                assert indices == list(range(indices[0], indices[0] + len(indices)))
                page.click("#stop")
                page.wait_for_function("document.getElementById('status').textContent === 'ended'")
                assert errors == [] and page.evaluate("window.sanawm.errors") == []
                assert sorted(n.rsplit(".", 1)[-1] for n in downloads) == ["mp4", "npz"], list(downloads)
                for name, download in downloads.items():
                    download.save_as(tmp_path / ("rec.mp4" if name.endswith(".mp4") else "rec.camera.npz"))
            finally:
                browser.close()
    frames, fps = read_video(tmp_path / "rec.mp4")
    traj = load_trajectory(tmp_path / "rec.camera.npz")
    assert fps == 16 and frames.shape[1:] == (64, 64, 3) and len(frames) == traj.num_frames >= 12
    forward_x = traj.c2w.numpy()[:, 0, 2]
    assert forward_x[-1] > forward_x[0] + 0.1  # the recording holds the turn


def test_page_with_a_token_and_an_uploaded_image(tmp_path):
    from PIL import Image

    Image.new("RGB", (90, 60), (10, 200, 30)).save(tmp_path / "mine.png")
    model = FakeWorldModel(size=(64, 64), chunk_delay_s=0.05)
    config = ServeConfig(data_dir=tmp_path / "data", token="page-token-123")
    with running_server(model, config) as (host, _):
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = browser.new_page()
                page.goto(f"http://{host}/#token=page-token-123")  # the fragment never reaches the server
                page.wait_for_function("document.getElementById('model').textContent.includes('fake')")
                page.set_input_files("#file", str(tmp_path / "mine.png"))
                page.wait_for_function("window.sanawm.uploadData !== null")
                page.click("#start")
                page.wait_for_function("window.sanawm.frames >= 5", timeout=20_000)
                page.click("#stop")
                page.wait_for_function("document.getElementById('status').textContent === 'ended'")
                assert page.evaluate("window.sanawm.errors") == []
            finally:
                browser.close()
    image = model.stream_calls[0]["image"]
    assert image.size == (90, 60) and image.getpixel((5, 5)) == (10, 200, 30)
