"""The project's promises outside the package: the lock, Binder, the README, the Makefile."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCK = tomllib.loads((ROOT / "uv.lock").read_text())


def locked_versions() -> dict[str, set[str]]:
    versions: dict[str, set[str]] = {}
    for package in LOCK["package"]:
        versions.setdefault(package["name"].lower(), set()).add(package["version"])
    return versions


def requirement_name(spec: str) -> str:
    return re.split(r"[\[<>=!~; ]", spec, maxsplit=1)[0].lower()


def test_every_dependency_has_an_upper_bound():
    specs = (
        PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["dev"]
    )
    unbounded = [s for s in specs if "<" not in s and "==" not in s]
    assert not unbounded, unbounded


def test_the_lock_matches_pyproject():
    locked = locked_versions()
    for spec in PYPROJECT["project"]["dependencies"]:
        assert requirement_name(spec) in locked, f"{spec} is not in uv.lock: run uv lock"


def test_binder_requirements_are_exported_from_the_lock():
    locked = locked_versions()
    pins = {}
    for line in (ROOT / "binder" / "requirements.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition("==")
        assert rest, f"unpinned Binder requirement: {line}"
        version = rest.split(";")[0].strip()
        pins.setdefault(name.lower(), set()).add(version)
        assert version in locked.get(name.lower(), set()), f"{line} differs from uv.lock"
    runtime = {requirement_name(s) for s in PYPROJECT["project"]["dependencies"]}
    assert runtime <= set(pins), runtime - set(pins)
    dev = {requirement_name(s) for s in PYPROJECT["project"]["optional-dependencies"]["dev"]}
    assert not dev & set(pins), "the Binder image stays lean: no test tools"


def test_binder_runtime_and_post_build():
    runtime = (ROOT / "binder" / "runtime.txt").read_text().strip()
    assert re.fullmatch(r"python-3\.(1[1-9])", runtime), runtime
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"
    post = ROOT / "binder" / "postBuild"
    text = post.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    assert post.stat().st_mode & 0o111, "postBuild must be executable"
    subprocess.run(["bash", "-n", str(post)], check=True)
    assert "pip install" not in text or "--no-deps" in text, "nothing resolves outside the lock"


def test_readme_binder_badge_opens_the_start_notebook_of_our_repository():
    url = PYPROJECT["project"]["urls"]["Repository"]
    owner_repo = url.removeprefix("https://github.com/")
    badge = f"https://mybinder.org/v2/gh/{owner_repo}/HEAD?labpath=" + quote(
        "notebooks/00_start_here.ipynb", safe=""
    )
    readme = (ROOT / "README.md").read_text()
    assert badge in readme
    assert (ROOT / "notebooks" / "00_start_here.ipynb").exists()


def test_quickstart_has_exactly_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "\nmake test\n" in ci and "set -euo pipefail" in ci


def test_makefile_is_self_documenting():
    out = subprocess.run(
        ["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    for target in ("demo", "test", "lab", "lint", "bench"):
        assert re.search(rf"make {target}\s+\S", out.stdout), out.stdout
