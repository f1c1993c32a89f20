"""Where the browser tests' screenshots go; said at the end of the run (CI keeps them as artefacts)."""
from pathlib import Path

SHOTS = Path(__file__).resolve().parents[2] / "build" / "ui-screenshots"


def pytest_terminal_summary(terminalreporter):
    if SHOTS.is_dir():
        terminalreporter.write_line(f"browser screenshots: {SHOTS} ({len(list(SHOTS.glob('*.png')))} files)")
