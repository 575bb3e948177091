"""The dashboard in a real headless browser: uvicorn serves the app on a free port against the seeded test
database, Debian's Chromium loads the pages (--dump-dom, --screenshot), and what it rendered matches the rollup.

Chromium is installed with apt-get when missing (as root); the test is skipped, saying why, only when that is
impossible (not root, no apt-get, or the installation fails).
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time

import pytest
import requests
import sqlalchemy as sa

CHROMIUM = "/usr/bin/chromium"
SEQ = "founders-follow-dm"


def _install_chromium() -> str | None:
    """Path to chromium, installing Debian's package if needed. None and a reason when impossible."""
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    if not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and there is no apt-get to install it: install Chromium "
                    "(Debian package `chromium`) to run the headless-browser test")
    if os.geteuid() != 0:
        pytest.skip("chromium is not installed and installing it needs root: run "
                    "`sudo apt-get install -y chromium` to run the headless-browser test")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:  # the package lists may be missing or stale on a fresh machine
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, text=True, timeout=600)
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if out.returncode != 0 or not os.path.exists(CHROMIUM):
        pytest.skip(f"could not install chromium with apt-get (exit {out.returncode}): {out.stderr[-500:]}")
    return CHROMIUM


@pytest.fixture(scope="module")
def chromium() -> str:
    return _install_chromium()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(seeded):
    """uvicorn serving the dashboard (mounted at /outreach as in Airflow, and at /) on a free port."""
    import uvicorn
    from fastapi import FastAPI

    from outreach.web.app import create_app

    engine, info = seeded
    dash = create_app(engine)
    root = FastAPI()
    root.mount("/outreach", dash)  # the way Airflow's API server mounts a plugin's fastapi_apps entry
    port = _free_port()
    config = uvicorn.Config(root, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}/outreach/"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if requests.get(base + "healthz", timeout=1).ok:
                break
        except requests.RequestException:
            time.sleep(0.05)
    else:
        pytest.fail("uvicorn did not start")
    yield base, engine, info
    srv.should_exit = True
    thread.join(timeout=10)


def _chrome(chromium: str, tmp_path, *args: str, timeout: int = 60) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{time.monotonic_ns()}"
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
           f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _rollup(engine, metric: str, step: str) -> int:
    with engine.connect() as c:
        return int(c.execute(sa.text("""
            SELECT coalesce(sum(value), 0) FROM metrics_daily m JOIN sequences s ON s.id = m.sequence_id
            WHERE s.name = :s AND m.metric = :m AND m.step = :st"""), {"s": SEQ, "m": metric, "st": step}).scalar())


def test_the_funnel_and_its_charts_render_in_chromium(chromium, server, tmp_path):
    base, engine, _ = server
    out = _chrome(chromium, tmp_path, "--dump-dom", f"{base}sequences/{SEQ}")
    dom = out.stdout
    assert out.returncode == 0 and "<table" in dom, out.stderr[-2000:]
    assert re.search(r'<h1 id="sequence-name">\s*founders-follow-dm', dom)
    # the funnel's numbers, as the browser rendered them, are the rollup's
    for step in ("follow", "dm_warm", "dm_cold"):
        row = re.search(rf'<tr data-step="{step}">(.*?)</tr>', dom, re.S).group(1)
        for metric in ("SENT", "REPLIED", "FOLLOWED_BACK"):
            shown = re.search(rf'data-metric="{metric}">([^<]*)<', row).group(1).strip()
            assert shown == f"{_rollup(engine, metric, step):,}", (step, metric)
    # the charts are real SVG in the DOM, with marks
    funnel_svg = re.search(r'<svg[^>]*data-chart="funnel".*?</svg>', dom, re.S).group(0)
    assert funnel_svg.count("<rect") >= 6
    bars = dict(re.findall(r'<g class="bar" data-label="([^"]+)" data-value="([^"]+)"', funnel_svg))
    assert int(float(bars["follow: sent"])) == _rollup(engine, "SENT", "follow")
    replies_svg = re.search(r'<svg[^>]*data-chart="replies".*?</svg>', dom, re.S).group(0)
    assert 'class="col"' in replies_svg
    assert re.search(r'<svg[^>]*data-chart="time-to-reply"', dom)


def test_a_screenshot_of_the_dashboard_is_not_blank(chromium, server, tmp_path):
    base, _, _ = server
    shot = tmp_path / "dashboard.png"
    out = _chrome(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1280,1800", "--hide-scrollbars",
                  f"{base}sequences/{SEQ}")
    assert out.returncode == 0 and shot.exists(), out.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a rendered page, not an empty canvas


def test_every_page_loads_in_chromium_with_relative_links(chromium, server, tmp_path):
    base, _, info = server
    for path, marker in (("", 'data-sequence="founders-follow-dm"'), ("accounts?now=" + info["now"], 'data-account="x-main"'),
                         ("review", f'data-enrollment="{info["review"][0]}"'),
                         (f"leads/{info['review'][0]}", 'data-kind="NEEDS_REVIEW"')):
        dom = _chrome(chromium, tmp_path, "--dump-dom", base + path).stdout
        assert marker in dom, path
        # every link stays inside the mounted app (relative), so it works under Airflow's /outreach/ prefix
        for href in re.findall(r'href="([^"]+)"', dom):
            assert not href.startswith(("/", "http")), (path, href)
