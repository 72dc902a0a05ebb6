"""The README's and the docs' commands run as written: a doctest-like runner over their ``` blocks.

Every line of a ``` block that starts with ``darkcfg `` runs, in page order, one page at a time
(README.md, then each docs/*.md), each page in a fresh temporary folder that holds the bundled
``cfgs/`` and synthetic weights made by ``darkcfg init`` under the names the page uses
(SYNTHETIC below); so a page's commands may use what its earlier commands wrote, never what
another page's did.  Skipped: synopsis lines with placeholders (``[CFG]``, ``IN OUT``,
``IMAGE...``) and any line whose comment says it cannot run here: it needs a real file
(``# needs real weights`` / ``# needs a real file``) or a GPU (``# needs a GPU``).  A block of a
docs page whose runnable lines are exactly those of a README block (the walkthrough the home
page and training page repeat) is run once, by the README's test.  A line that needs an
optional package (``export``: onnx, to OpenVINO IR also openvino; int8: torchao) is left out
when it is missing, and the page's test ends as skipped, naming them, after every other line
has run and passed.  Two comment conventions are checked:

* ``# byte-identical``: the output equals the file its input was converted from;
* any other comment: every number in it appears in the command's output (``# 107 layers,
  65.879 BFLOPs``).

Also here: the relative links of README.md and docs/*.md point at files that exist and at
headings they hold (GitHub's anchors), and the docs site builds with ``mkdocs build --strict``
(skipped when mkdocs is not installed).
"""
from __future__ import annotations

import glob
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from darkcfg.cli import main

from _helpers import same_bytes
from conftest import CFGS, ROOT

README = os.path.join(ROOT, "README.md")
DOCS = os.path.join(ROOT, "docs")
MKDOCS_YML = os.path.join(ROOT, "mkdocs.yml")
PAGES = [p for p in [README] + sorted(glob.glob(os.path.join(DOCS, "*.md"))) if os.path.exists(p)]
# weights files the pages name, made synthetically: name -> the cfg whose layout they have
SYNTHETIC = {"weights/yolov3.weights": "cfgs/yolov3.cfg",
             "weights/tiny.weights": "cfgs/yolov3-tiny.cfg",
             "weights/yolov3-tiny.weights": "cfgs/yolov3-tiny.cfg",
             "yolov3.weights": "cfgs/yolov3.cfg",
             "yolov3-tiny.weights": "cfgs/yolov3-tiny.cfg"}
PLACEHOLDER = re.compile(r"^\[?[A-Z][A-Z0-9_]*(\.\w+|\.\.\.)?\]?$")
NEEDS_REAL = re.compile(r"needs? real|real file|needs? an? GPU", re.I)


def readme_blocks(text: str) -> list:
    """Per ``` block, the (line number, command line, comment) of each darkcfg line in it."""
    blocks, inside = [], False
    for nu, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if s.startswith("```"):
            inside = not inside
            if inside:
                blocks.append([])
            continue
        if not inside or not s.startswith("darkcfg "):
            continue
        command, _, comment = s.partition(" #")
        blocks[-1].append((nu, command.strip(), comment.strip()))
    return blocks


def readme_commands(text: str) -> list:
    """(line number, command line, comment) of every darkcfg line inside a ``` block."""
    return [c for block in readme_blocks(text) for c in block]


def runnable(command: str, comment: str) -> bool:
    """Not a synopsis line (placeholders, prose) and not marked as needing a real file or GPU."""
    if NEEDS_REAL.search(comment) or any(PLACEHOLDER.match(t) for t in command.split()[1:]):
        return False
    try:
        shlex.split(command)
    except ValueError:           # prose with an apostrophe: a synopsis line
        return False
    return True


def _read(path) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _runnable_blocks(text: str) -> list:
    return [b for b in ([c for c in block if runnable(c[1], c[2])] for block in readme_blocks(text))
            if b]


def page_commands(path) -> list:
    """The commands a page's test runs: its runnable lines, less a docs page's blocks that
    repeat a README block line for line (the README's test runs those)."""
    blocks = _runnable_blocks(_read(path))
    if path != README and os.path.exists(README):
        in_readme = {tuple(c for _, c, _ in b) for b in _runnable_blocks(_read(README))}
        blocks = [b for b in blocks if tuple(c for _, c, _ in b) not in in_readme]
    return [c for b in blocks for c in b]


def test_the_parser_finds_commands_and_skips_synopses():
    text = ("x\n```\ndarkcfg summary [CFG]            layer table\n"
            "darkcfg convert IN OUT           .weights -> .pt\n"
            "darkcfg detect IMAGE... --weights W   letterbox\n```\n"
            "darkcfg build   (outside a block)\n"
            "```\ndarkcfg summary cfgs/yolov3.cfg   # 107 layers\n"
            "darkcfg detect dog.jpg --weights w.weights   # needs real weights\n"
            "darkcfg train a.data b.cfg --device cuda   # needs a GPU\n"
            "pip install -e . && darkcfg build\n```\n")
    found = readme_commands(text)
    assert [(c, runnable(c, m)) for _, c, m in found] == [
        ("darkcfg summary [CFG]            layer table", False),
        ("darkcfg convert IN OUT           .weights -> .pt", False),
        ("darkcfg detect IMAGE... --weights W   letterbox", False),
        ("darkcfg summary cfgs/yolov3.cfg", True),
        ("darkcfg detect dog.jpg --weights w.weights", False),
        ("darkcfg train a.data b.cfg --device cuda", False)]
    assert [len(b) for b in readme_blocks(text)] == [3, 3]


def test_a_docs_block_that_repeats_a_readme_block_runs_once(tmp_path, monkeypatch):
    readme, page = tmp_path / "README.md", tmp_path / "page.md"
    readme.write_text("```\ndarkcfg data demo shapes\ndarkcfg summary cfgs/yolov3.cfg\n```\n")
    page.write_text("```\ndarkcfg data demo shapes\ndarkcfg summary cfgs/yolov3.cfg\n```\n"
                    "```\ndarkcfg data demo shapes\n```\n")
    monkeypatch.setattr(sys.modules[__name__], "README", str(readme))
    assert [c for _, c, _ in page_commands(str(page))] == ["darkcfg data demo shapes"]
    assert len(page_commands(str(readme))) == 2


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    shutil.copytree(CFGS, tmp_path / "cfgs", ignore=shutil.ignore_patterns("*.py", "__*"))
    (tmp_path / "weights").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_readme_shows_runnable_commands():
    if not os.path.exists(README):
        pytest.skip("no README.md")
    assert page_commands(README), "the README shows no runnable darkcfg command"


@pytest.mark.parametrize("page", [p for p in PAGES if page_commands(p)],
                         ids=lambda p: os.path.relpath(p, ROOT))
def test_page_commands_run_as_written(page, workdir):
    name = os.path.relpath(page, ROOT)
    commands = page_commands(page)
    needed = {t for _, c, _ in commands for t in shlex.split(c) if t in SYNTHETIC}
    for weights in sorted(needed):
        r = CliRunner().invoke(main, ["init", SYNTHETIC[weights], weights, "--seed", "1"])
        assert r.exit_code == 0, r.output
    made_from, left_out = {}, []
    for nu, command, comment in commands:
        args = shlex.split(command)[1:]
        where = f"{name}:{nu}: {command}"
        missing = [p for p in optional_packages(args) if importlib.util.find_spec(p) is None]
        if missing:
            left_out.append(f"{where} (needs {', '.join(missing)})")
            continue
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 0, f"{where}\n{r.output}"
        assert "Traceback" not in r.output, where
        if args[0] == "convert":
            src, dst = [a for a in args[1:] if not a.startswith("-")][:2]
            made_from[dst] = made_from.get(src, src)
            if "byte-identical" in comment:
                assert same_bytes(dst, made_from[dst]), f"{where}: not byte-identical"
        elif comment:
            for number in re.findall(r"\d[\d,.]*\d|\d", comment):
                assert number in r.output, f"{where}: '{number}' of the comment not in output"
    for f in workdir.rglob("*"):           # full-size yolov3 files: do not keep them
        if f.is_file() and f.suffix in (".weights", ".pt", ".safetensors", ".onnx"):
            f.unlink()
    if left_out:
        pytest.skip("optional packages are not installed; every other command ran; left out:\n"
                    + "\n".join(left_out))


def optional_packages(args) -> list:
    """The optional packages a command needs: export onnx (OpenVINO IR also openvino),
    --dtype int8 or an int8 .pt2 torchao."""
    need = []
    if args[0] == "export":
        need.append("onnx")
        if "openvino" in args or any(a.endswith(".xml") for a in args):
            need.append("openvino")
    if "int8" in args or any(a.endswith(".pt2") for a in args):
        need.append("torchao")
    return need


# -- links ----------------------------------------------------------------------------------

FENCE = re.compile(r"^ *```.*?^ *```", re.S | re.M)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def github_anchors(text: str) -> set:
    """The anchors GitHub gives a Markdown file's headings (lower case, punctuation dropped,
    spaces to hyphens, -1, -2... for repeats)."""
    seen, out = {}, set()
    for line in FENCE.sub("", text).splitlines():
        m = re.match(r"#{1,6} +(.*?) *#* *$", line)
        if not m:
            continue
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1))     # a link: its text
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def broken_links(path) -> list:
    text = _read(path)
    bad = []
    for target in LINK.findall(FENCE.sub("", text)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):        # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
        if not os.path.isfile(dest):
            bad.append(f"{target}: no file {os.path.relpath(dest, ROOT)}")
        elif anchor and dest.endswith(".md") and anchor not in github_anchors(_read(dest)):
            bad.append(f"{target}: no heading '#{anchor}' in {os.path.relpath(dest, ROOT)}")
    return bad


def test_github_anchors():
    text = ("# darkcfg\n## How the [net] options are honoured\n## `darkcfg map`\n"
            "```\n# not a heading\n```\n## Train, map and detect\n## Notes\n## Notes\n")
    assert github_anchors(text) == {"darkcfg", "how-the-net-options-are-honoured", "darkcfg-map",
                                    "train-map-and-detect", "notes", "notes-1"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_links_point_at_files_and_headings(page):
    assert broken_links(page) == []


# -- the site -------------------------------------------------------------------------------

@pytest.mark.skipif(not os.path.exists(MKDOCS_YML), reason="no mkdocs.yml")
def test_docs_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")        # the mkdocs-material theme
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", MKDOCS_YML,
                        "-d", str(tmp_path / "site")], capture_output=True, text=True,
                       env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "site" / "index.html").exists()
