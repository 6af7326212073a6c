"""`make check` runs `mypy --strict` on every package the wheel ships: the Makefile's PACKAGES is pyproject's list.

.venv/bin/python -m pytest tests/test_makefile.py -q
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def check_recipe() -> list[str]:
    """The `check:` target's recipe lines."""
    lines = (REPO_ROOT / "Makefile").read_text().splitlines()
    start = lines.index("check: $(STAMP)") + 1
    recipe: list[str] = []
    for line in lines[start:]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def test_make_check_type_checks_every_shipped_package_strictly() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    shipped = {p.removesuffix("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    (packages,) = re.findall(r"^PACKAGES\s*:=\s*(.+)$", (REPO_ROOT / "Makefile").read_text(), re.MULTILINE)
    assert set(packages.split()) == shipped, "Makefile PACKAGES and pyproject's packages.find include differ"
    assert "$(VENV)/bin/mypy --strict $(PACKAGES)" in check_recipe()
