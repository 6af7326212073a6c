"""Every `kiln` command line in docs/ names commands and options that kiln's click commands have, as
tests/test_readme.py checks the README's: a renamed command or an option that does not exist fails here,
not in a reader's terminal.

    .venv/bin/python -m pytest tests/test_docs_commands.py -q

Commands come from fenced bash/sh/console blocks (joined across `\\` continuations, split at `&&`, `||`, `;`
and `|`, leading `VAR=value` assignments and `.venv/bin/` dropped) and from inline code spans that start with
`kiln `; a line of program output (`kiln · edgnet ...`) is not a command. Docs write placeholders (NAME,
`[--json]`, paths that exist elsewhere), so a line is checked for its command path and each option's name,
not parsed in full.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from kiln.cli import main

DOCS = Path(__file__).resolve().parents[1] / "docs"
SEPARATORS = {"&&", "||", ";", "|"}
PATTERN_MARKS = ("|", "...", "<", ">", "[")


def _commands_in_line(line: str) -> list[list[str]]:
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return []  # an unbalanced quote: a fragment of a larger example
    commands, current = [], []
    for word in [*words, ";"]:
        if word in SEPARATORS:
            commands.append(current)
            current = []
        else:
            current.append(word)
    found = []
    for command in commands:
        while command and re.match(r"^[A-Z_][A-Z0-9_]*=", command[0]):
            command = command[1:]
        is_kiln = bool(command) and command[0].removeprefix(".venv/bin/") == "kiln"
        if is_kiln and (len(command) == 1 or re.match(r"^(-|[a-z][a-z0-9_-]*$)", command[1])):
            found.append(command)
    return found


def doc_commands() -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        for block in re.findall(r"```(?:bash|sh|shell|console)\n(.*?)```", text, re.S):
            for line in block.replace("\\\n", " ").splitlines():
                found += [(page.name, c) for c in _commands_in_line(line.removeprefix("$ "))]
        prose = re.sub(r"```.*?```", "", text, flags=re.S)
        for span in re.findall(r"`(kiln [^`]+)`", prose):
            if not any(mark in span for mark in PATTERN_MARKS):
                found += [(page.name, c) for c in _commands_in_line(span)]
    return found


COMMANDS = doc_commands()


def test_the_docs_have_kiln_commands() -> None:
    assert len(COMMANDS) > 30 and {page for page, _ in COMMANDS} >= {"data-loop.md", "training.md"}


def check(words: list[str]) -> None:
    """The sub-command path exists and every option named exists on the command it reaches."""
    command: click.Command = main
    ctx = click.Context(main, info_name="kiln")
    rest = words[1:]
    path = ["kiln"]
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        sub = command.get_command(ctx, rest[0])
        if sub is None:
            raise AssertionError(f"`{' '.join(path)}` has no command {rest[0]!r}")
        path.append(rest.pop(0))
        command, ctx = sub, click.Context(sub, info_name=path[-1], parent=ctx)
    known = {"--help"} | {name for p in command.params for name in (*p.opts, *p.secondary_opts)}
    for word in rest:
        name = word.strip("[]").split("=")[0]
        if name.startswith("-") and name != "-" and not re.match(r"^-\d", name) and name not in known:
            raise AssertionError(f"`{' '.join(path)}` has no option {name}; it has {sorted(known)}")


@pytest.mark.parametrize(("page", "words"), COMMANDS, ids=[f"{p}:{shlex.join(w)[:60]}" for p, w in COMMANDS])
def test_each_docs_kiln_command_is_real(page: str, words: list[str]) -> None:
    try:
        check(words)
    except AssertionError as exc:
        pytest.fail(f"docs/{page}: `{shlex.join(words)}`: {exc}")


def test_a_made_up_option_or_command_fails() -> None:
    with pytest.raises(AssertionError, match="has no option --allowed-hosts"):
        check(["kiln", "server", "start", "--allowed-hosts", "x"])
    with pytest.raises(AssertionError, match="has no command 'strat'"):
        check(["kiln", "server", "strat"])


def test_flags_in_the_team_server_table_exist() -> None:
    """The settings table names `kiln server start`'s flag beside each variable; each must be a real flag."""
    table = (DOCS / "team-server.md").read_text(encoding="utf-8")
    rows = [line for line in table.splitlines() if line.startswith("| `KILN_SERVER_")]
    flags = {flag for row in rows for flag in re.findall(r"`(--[a-z-]+)`", row) if "mlflow server" not in row}
    assert {"--host", "--port", "--workers"} <= flags, "the table lost its flags"
    for flag in sorted(flags):
        check(["kiln", "server", "start", flag])
