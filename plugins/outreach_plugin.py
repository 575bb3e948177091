"""Airflow 3 plugin: the outreach dashboard inside the Airflow UI.

The FastAPI app (``outreach.web.app``) is mounted by Airflow's API server at ``/outreach``; the external view adds
"Outreach" to the Browse menu and shows the app in the UI (an iframe at ``/plugin/outreach``). ``href`` is
relative, so it follows the API server's base URL. Importing this module touches no database: the app resolves
``outreach.store.db.get_engine()`` at its first request.
"""
from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from outreach.web.app import create_app

app = create_app()


class OutreachPlugin(AirflowPlugin):
    name = "outreach"
    fastapi_apps = [{"app": app, "url_prefix": "/outreach", "name": "Outreach"}]
    external_views = [{
        "name": "Outreach",
        "href": "outreach/",
        "url_route": "outreach",
        "destination": "nav",
        "category": "browse",
        "icon": "outreach/icon.svg",
    }]
