"""The outreach dashboard (FastAPI, server-rendered HTML, inline SVG charts). See ``outreach.web.app``."""
