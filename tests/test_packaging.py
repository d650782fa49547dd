"""Packaging: every package folder is listed in pyproject.toml, under the name it installs as."""

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from 3.11")

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_folder_is_installed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    # Installed name -> folder, from the package-dir mapping: kernels/ ships as tritonbp.kernels.
    roots = {name: ROOT / folder for name, folder in config["package-dir"].items()}

    found = set()
    for name, folder in roots.items():
        for init in folder.rglob("__init__.py"):
            relative = init.parent.relative_to(folder).parts
            found.add(".".join((name, *relative)))

    assert found == listed, "list every package folder in [tool.setuptools] packages"
    assert "kernels" not in listed, "kernels/ must install as tritonbp.kernels, never as kernels"
