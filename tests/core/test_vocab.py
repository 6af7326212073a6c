"""core.vocab is the one place a kiln.* tag or metadata key is spelled: run_tag refuses an undeclared name, and no
other module of the package writes one by hand (string literals and f-string parts, docstrings aside)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from core import vocab

REPO_ROOT = Path(__file__).resolve().parents[2]
SKIPPED = {"tests", "node_modules", "build", "dist"}
SPELLED = re.compile(r"^(kiln\.[a-z_]|kiln_profile$|mlflow\.(note\.content|parentRunId|runName|experimentKind)$)")


def test_run_tag_knows_declared_names_and_refuses_others() -> None:
    assert vocab.run_tag("stopped_by") == vocab.STOPPED_BY == "kiln.stopped_by"
    assert vocab.run_tag("metric") == vocab.METRIC and vocab.PROFILE_KEY not in vocab.CONTRACT_KEYS
    with pytest.raises(ValueError, match="kiln.stoped_by"):
        vocab.run_tag("stoped_by")


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
            found.add(id(first.value))
    return found


def hand_spelled(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    if not re.search(r"[\"'](kiln[._]|mlflow\.)", text):  # most files: nothing to parse
        return []
    tree = ast.parse(text)
    docs = _docstrings(tree)
    return [
        f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
        and SPELLED.match(node.value)
    ]  # fmt: skip


def test_no_module_spells_a_kiln_tag_by_hand() -> None:
    files = [
        p for p in REPO_ROOT.rglob("*.py")
        if not any(part.startswith(".") or part in SKIPPED for part in p.relative_to(REPO_ROOT).parts)
        and p != REPO_ROOT / "core" / "vocab.py"
    ]  # fmt: skip
    assert len(files) > 100
    found = [line for path in files for line in hand_spelled(path)]
    assert not found, "use core.vocab instead:\n" + "\n".join(found)
