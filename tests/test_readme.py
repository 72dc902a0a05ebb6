"""The README's commands run as written: a doctest-like runner over its ``` blocks.

Every line of a ``` block that starts with ``darkcfg `` runs, in README order, in one temporary
folder that holds the bundled ``cfgs/`` and synthetic weights made by ``darkcfg init`` under the
names the README uses (SYNTHETIC below).  Skipped: synopsis lines with placeholders (``[CFG]``,
``IN OUT``, ``IMAGE...``) and any line whose comment says it needs a real file (write
``# needs real weights`` / ``# real file``).  Two comment conventions are checked:

* ``# byte-identical``: the output equals the file its input was converted from;
* any other comment: every number in it appears in the command's output (``# 107 layers,
  65.879 BFLOPs``).
"""
from __future__ import annotations

import os
import re
import shlex
import shutil

import pytest
from click.testing import CliRunner

from darkcfg.cli import main

from conftest import CFGS, ROOT

README = os.path.join(ROOT, "README.md")
# weights files the README names, made synthetically: name -> the cfg whose layout they have
SYNTHETIC = {"weights/yolov3.weights": "cfgs/yolov3.cfg",
             "weights/tiny.weights": "cfgs/yolov3-tiny.cfg",
             "weights/yolov3-tiny.weights": "cfgs/yolov3-tiny.cfg",
             "yolov3.weights": "cfgs/yolov3.cfg",
             "yolov3-tiny.weights": "cfgs/yolov3-tiny.cfg"}
PLACEHOLDER = re.compile(r"^\[?[A-Z][A-Z0-9_]*(\.\w+|\.\.\.)?\]?$")
NEEDS_REAL = re.compile(r"needs? real|real file", re.I)


def readme_commands(text: str) -> list:
    """(line number, command line, comment) of every darkcfg line inside a ``` block."""
    out, inside = [], False
    for nu, line in enumerate(text.splitlines(), 1):
        if line.strip().startswith("```"):
            inside = not inside
            continue
        s = line.strip()
        if not inside or not s.startswith("darkcfg "):
            continue
        command, _, comment = s.partition(" #")
        out.append((nu, command.strip(), comment.strip()))
    return out


def runnable(command: str, comment: str) -> bool:
    """Not a synopsis line (placeholders, prose) and not marked as needing a real file."""
    if NEEDS_REAL.search(comment) or any(PLACEHOLDER.match(t) for t in command.split()[1:]):
        return False
    try:
        shlex.split(command)
    except ValueError:           # prose with an apostrophe: a synopsis line
        return False
    return True


def test_the_parser_finds_commands_and_skips_synopses():
    text = ("x\n```\ndarkcfg summary [CFG]            layer table\n"
            "darkcfg convert IN OUT           .weights -> .pt\n"
            "darkcfg detect IMAGE... --weights W   letterbox\n```\n"
            "darkcfg build   (outside a block)\n"
            "```\ndarkcfg summary cfgs/yolov3.cfg   # 107 layers\n"
            "darkcfg detect dog.jpg --weights w.weights   # needs real weights\n"
            "pip install -e . && darkcfg build\n```\n")
    found = readme_commands(text)
    assert [(c, runnable(c, m)) for _, c, m in found] == [
        ("darkcfg summary [CFG]            layer table", False),
        ("darkcfg convert IN OUT           .weights -> .pt", False),
        ("darkcfg detect IMAGE... --weights W   letterbox", False),
        ("darkcfg summary cfgs/yolov3.cfg", True),
        ("darkcfg detect dog.jpg --weights w.weights", False)]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    shutil.copytree(CFGS, tmp_path / "cfgs", ignore=shutil.ignore_patterns("*.py", "__*"))
    (tmp_path / "weights").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _same_bytes(a, b) -> bool:
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 24), fb.read(1 << 24)
            if x != y:
                return False
            if not x:
                return True


@pytest.mark.skipif(not os.path.exists(README), reason="no README.md")
def test_readme_commands_run_as_written(workdir):
    with open(README, encoding="utf-8") as f:
        commands = [c for c in readme_commands(f.read()) if runnable(c[1], c[2])]
    assert commands, "the README shows no runnable darkcfg command"
    needed = {t for _, c, _ in commands for t in shlex.split(c) if t in SYNTHETIC}
    for name in sorted(needed):
        r = CliRunner().invoke(main, ["init", SYNTHETIC[name], name, "--seed", "1"])
        assert r.exit_code == 0, r.output
    made_from = {}
    for nu, command, comment in commands:
        args = shlex.split(command)[1:]
        if args[0] == "export":
            pytest.importorskip("onnx")
        r = CliRunner().invoke(main, args)
        where = f"README.md:{nu}: {command}"
        assert r.exit_code == 0, f"{where}\n{r.output}"
        assert "Traceback" not in r.output, where
        if args[0] == "convert":
            src, dst = [a for a in args[1:] if not a.startswith("-")][:2]
            made_from[dst] = made_from.get(src, src)
            if "byte-identical" in comment:
                assert _same_bytes(dst, made_from[dst]), f"{where}: not byte-identical"
        elif comment:
            for number in re.findall(r"\d[\d,.]*\d|\d", comment):
                assert number in r.output, f"{where}: '{number}' of the comment not in output"
    for f in workdir.rglob("*"):           # full-size yolov3 files: do not keep them
        if f.is_file() and f.suffix in (".weights", ".pt", ".safetensors", ".onnx"):
            f.unlink()
