"""The command line as a script or a narrow terminal sees it: full names, JSON, user text printed as text."""
from __future__ import annotations

import json

import pytest

from sslzoo import zoo

from .conftest import run_cli


def test_list_prints_full_names_piped_and_narrow():
    proc = run_cli("list", "--tags", env={"COLUMNS": "40"}, check=True)  # piped, and a 40-column terminal
    names = zoo.list_models(tags=True)
    assert max(map(len, names)) > 20  # names a 40-column table would cut
    cells = {c.strip() for line in proc.stdout.splitlines() for c in line.split("│")}
    assert set(names) <= cells, sorted(set(names) - cells)
    assert "…" not in proc.stdout


def test_list_json_is_the_registry():
    rows = json.loads(run_cli("list", "--json", check=True).stdout)
    assert [r["name"] for r in rows] == zoo.list_models()
    rot = next(r for r in rows if r["name"] == "rotation-alexnet")
    assert rot["default_tag"] == "fmnist" and "fmnist" in rot["tags"] and rot["pretext"] == "rotation"
    tagged = json.loads(run_cli("list", "jig*", "--tags", "--json", check=True).stdout)
    assert [r["name"] for r in tagged] == zoo.list_models("jig*", tags=True)


@pytest.mark.parametrize("args", [
    ("info", "[/]"),
    ("evaluate", "[/x]/model"),
    ("convert", "rotnet-alexnet", "x[/y].pth"),
    ("extract", "rotation-alexnet", "a.png", "--out", "[/x].txt"),
])
def test_user_text_with_markup_is_printed_as_text(args):
    proc = run_cli(*args)
    assert proc.returncode in (1, 2) and "Traceback" not in proc.stderr and "MarkupError" not in proc.stderr
    assert proc.stderr.startswith("error:") or "Usage" in proc.stderr, proc.stderr
    odd = next(a for a in args if "[/" in a)
    assert odd in proc.stderr or odd.split("/")[0] in proc.stderr  # named as typed, not eaten as markup


def test_ansi_escapes_in_names_do_not_reach_the_terminal(tmp_path):
    proc = run_cli("info", "evil\x1b[2J\x1b[31mname")
    assert proc.returncode == 1 and "\x1b" not in proc.stderr
    assert "evil\\x1b[2J\\x1b[31mname" in proc.stderr
