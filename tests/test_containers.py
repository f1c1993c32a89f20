"""The container files (docker/, .dockerignore, scripts/container-base.sh): cheap static checks, and
the entrypoint's key handling run against a stand-in `tunesmith` (no image is built here; how one
was built and run is in docs/containers.md)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = {"cpu": ROOT / "docker" / "Dockerfile", "cuda": ROOT / "docker" / "Dockerfile.cuda"}
SCRIPTS = [ROOT / "docker" / "entrypoint.sh", ROOT / "scripts" / "container-base.sh", ROOT / "scripts" / "setup-env.sh"]
needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(l for l in path.read_text().splitlines() if not l.lstrip().startswith("#")))
    found = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_dockerfiles_install_through_setup_env_and_run_as_a_user(kind):
    steps = instructions(DOCKERFILES[kind])
    users = [args for word, args in steps if word == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0"), "the server must not run as root"
    runs = " ".join(args for word, args in steps if word == "RUN")
    assert "scripts/setup-env.sh" in runs
    assert "TUNESMITH_EXTRAS" in runs and "TUNESMITH_TORCH" in runs
    assert ("ARG", "TUNESMITH_EXTRAS=all") in steps  # the image has no test tools
    assert steps[0][0] == "ARG" and steps[0][1].startswith("BASE_IMAGE=") and ("FROM", "${BASE_IMAGE}") in steps
    assert any(word == "HEALTHCHECK" and "/health" in args for word, args in steps)
    assert any(word == "ENTRYPOINT" and "tunesmith-entrypoint" in args for word, args in steps)
    env = " ".join(args for word, args in steps if word in ("ENV", "ARG"))
    assert "TUNESMITH_API_KEY" not in env, "no key is baked into an image"


def test_base_images():
    assert ("ARG", "BASE_IMAGE=python:3.11-slim-bookworm") in instructions(DOCKERFILES["cpu"])
    first = instructions(DOCKERFILES["cuda"])[0]
    assert first[0] == "ARG" and re.fullmatch(r"BASE_IMAGE=nvidia/cuda:[\d.]+-runtime-ubuntu[\d.]+", first[1])


def test_dockerignore_lets_in_only_what_the_dockerfiles_copy():
    patterns = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert patterns[0] == "*", "an allow-list: .venv, build/, runs and .git stay out"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert not allowed & {".venv", "build", ".git", "runs", "tunesmith.egg-info"}
    for path in DOCKERFILES.values():
        for word, args in instructions(path):
            if word == "COPY" and not args.startswith("--from"):
                *sources, _ = args.split()
                for source in sources:
                    assert source.rstrip("/").removeprefix("./") in allowed, f"{path.name}: COPY {source} is ignored"
                    assert (ROOT / source).exists()


def test_setup_env_defaults_are_unchanged():
    text = (ROOT / "scripts" / "setup-env.sh").read_text()
    assert '${TUNESMITH_EXTRAS:-all,test}' in text
    assert '"${TUNESMITH_TORCH:-torch==2.13.0}"' in text
    assert "${TUNESMITH_TORCH_INDEX_URL:+--index-url" in text


@needs_bash
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse(script):
    subprocess.run(["bash", "-n", str(script)], check=True)


@needs_bash
def test_entrypoint_registers_the_key_from_the_environment_and_serves_on_all_interfaces(tmp_path):
    """Against a stand-in `tunesmith` that prints its arguments: the real key handling (the home's
    database), without starting a server."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "tunesmith").write_text('#!/bin/sh\necho "tunesmith $*"\necho "key=${TUNESMITH_API_KEY:-unset}"\n')
    (fake / "tunesmith").chmod(0o755)
    home = tmp_path / "home"
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "TUNESMITH_HOME": str(home), "TUNESMITH_PORT": "8123"}
    env.pop("TUNESMITH_API_KEY", None)
    env.pop("TUNESMITH_DATABASE_URL", None)
    entrypoint = str(ROOT / "docker" / "entrypoint.sh")

    def run(*args, **extra):
        return subprocess.run(["bash", entrypoint, *args], env={**env, **extra}, capture_output=True, text=True, timeout=120)

    no_key = run()
    assert no_key.returncode == 64 and "no API key" in no_key.stderr

    first, second = "ts-" + "a" * 30, "ts-" + "b" * 30
    served = run("serve", "--max-waiting", "4", TUNESMITH_API_KEY=first)
    assert served.returncode == 0, served.stderr
    assert served.stdout.splitlines() == ["tunesmith serve --host 0.0.0.0 --port 8123 --workers 0 --max-waiting 4",
                                          "key=unset"]  # the server's processes never see the key
    assert run(TUNESMITH_API_KEY=second).returncode == 0  # a changed value revokes the old one

    from tunesmith.jobs.db import Database
    from tunesmith.jobs.keys import verify
    from tunesmith.workspace import Workspace

    db = Database.for_workspace(Workspace(home))
    assert verify(db, first) is None
    assert verify(db, second).role == "user"
    assert run(TUNESMITH_API_KEY=first).returncode == 64  # a revoked key is not brought back
    assert run("tunesmith", "models", "list").stdout.startswith("tunesmith models list")  # other commands: as is
    assert run().returncode == 0  # the home's keys are enough without the variable
