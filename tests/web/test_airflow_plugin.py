"""The Airflow plugin: Airflow's own plugin manager finds it in plugins/ (and nothing else there), its external
view is a menu entry pointing at the app, and Airflow's API server code mounts the app at /outreach, where it
answers from the test database. Run in a subprocess: the plugin manager caches per process."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from outreach.localenv import airflow_env
from outreach.store.db import PROJECT_ROOT

SCRIPT = textwrap.dedent("""
    import json, sys
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from airflow import plugins_manager
    from airflow.api_fastapi.app import init_plugins

    plugins, errors = plugins_manager._get_plugins()
    external_views, react_apps = plugins_manager._get_ui_plugins()
    apps, _ = plugins_manager.get_fastapi_plugins()
    app = FastAPI()
    init_plugins(app)  # what Airflow's API server does with every plugin's fastapi_apps
    client = TestClient(app)
    index = client.get("/outreach/")
    print("RESULT " + json.dumps({
        "plugins": [p.name for p in plugins], "errors": errors, "external_views": external_views,
        "apps": [{k: (v if k != "app" else type(v).__name__) for k, v in a.items()} for a in apps],
        "index_status": index.status_code, "index_has_table": 'data-sequence="founders-follow-dm"' in index.text,
        "icon": client.get("/outreach/icon.svg").status_code,
        "email_module": sys.modules["email"].__file__, "main_module": getattr(sys.modules["__main__"], "__file__", None),
    }))
""")


def test_airflow_loads_the_plugin_and_mounts_the_dashboard(seeded, tmp_path):
    engine, _ = seeded
    env = airflow_env(engine.url.render_as_string(hide_password=False), home=tmp_path / "airflow",
                      extra={"AIRFLOW__CORE__LAZY_LOAD_PLUGINS": "False"})
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert r["plugins"] == ["outreach"] and r["errors"] == {}
    # plugins/.airflowignore keeps the engine package from being imported file by file as top-level modules
    assert "plugins" not in r["email_module"] and "web/__main__" not in str(r["main_module"])
    assert r["apps"] == [{"app": "FastAPI", "url_prefix": "/outreach", "name": "Outreach"}]
    view = r["external_views"][0]
    assert view["name"] == "Outreach" and view["href"] == "outreach/" and view["url_route"] == "outreach"
    assert view["destination"] == "nav" and view["category"] == "browse"
    assert r["index_status"] == 200 and r["index_has_table"] and r["icon"] == 200


def test_the_app_runs_on_its_own_with_python_m(seeded, tmp_path):
    """``python -m outreach.web --port N`` serves the dashboard (uvicorn) against the configured database."""
    import os
    import socket
    import time

    import requests

    engine, _ = seeded
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, OUTREACH_DATABASE_URL=engine.url.render_as_string(hide_password=False),
               PYTHONPATH=str(PROJECT_ROOT / "plugins"))
    proc = subprocess.Popen([sys.executable, "-m", "outreach.web", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                r = requests.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
                time.sleep(0.1)
        else:
            raise AssertionError("python -m outreach.web did not start")
        assert r.status_code == 200 and 'data-sequence="founders-follow-dm"' in r.text
    finally:
        proc.terminate()
        proc.wait(timeout=10)
