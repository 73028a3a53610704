"""The documentation site builds with `mkdocs build --strict` (a broken link, a page missing from
the navigation or a failing reference generator fails it), and its generated references list
what the code has."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from workbench.cli import app
from workbench.retrieval.config import PipelineConfig

pytestmark = pytest.mark.extra("docs")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    return out


def test_the_site_builds_strictly_with_the_readme_as_home_page(site: Path):
    home = (site / "index.html").read_text()
    assert "A five-minute tour" in home
    assert 'href="studies/"' in home and 'href="docs/' not in home  # README links point at the site's pages


def test_the_cli_reference_lists_every_command_and_option(site: Path):
    page = (site / "cli" / "index.html").read_text()
    root = typer.main.get_command(app)
    for name, command in root.commands.items():
        assert f"workbench {name}" in page, name
        for option in getattr(command, "params", []):
            for flag in getattr(option, "opts", []):
                if flag.startswith("--") and flag != "--help":
                    assert flag in page, (name, flag)


def test_the_config_reference_lists_every_key(site: Path):
    page = (site / "config" / "index.html").read_text()
    for name, field in PipelineConfig.model_fields.items():
        nested = getattr(field.annotation, "model_fields", None)
        keys = [f"{name}.{key}" for key in nested] if nested else [name]
        for key in keys:
            assert f"<code>{key}</code>" in page, key
