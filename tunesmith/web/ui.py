"""The web UI: static files (tunesmith/web/ui/) served at /ui, every asset from this package
(no CDN, works offline). The pages call the same /v1 API as any client, with the same keys."""
from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

UI_DIR = Path(__file__).parent / "ui"


def mount_ui(app: FastAPI) -> None:
    app.mount("/ui", StaticFiles(directory=UI_DIR, html=True), name="ui")
    app.add_api_route("/", home, methods=["GET"], include_in_schema=False)


def home():
    return RedirectResponse("/ui/")
