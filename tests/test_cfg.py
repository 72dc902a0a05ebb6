"""The cfg model: reading darknet's syntax, errors with locations, the writer, rewrites."""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from darkcfg.config import cfg as C
from darkcfg.config import shapes
from darkcfg.errors import CfgError

from conftest import CFGS, darknet_cfgs, cfg_id, needs_shared

NET = "[net]\nwidth=32\nheight=32\nchannels=3\n"


@pytest.mark.parametrize("text, key, want", [
    # each row: a darknet-syntax detail, the option read back, the value darknet reads
    ("[net]\nwidth = 416\n", "width", 416),                   # spaces anywhere are stripped
    ("[net]\r\nwidth=416\r\n", "width", 416),                 # CRLF
    ("[network]\n\twidth=4 16\n", "width", 416),              # alias, tab, inner space
    ("[net]\n# width=1\n; width=2\nwidth=3\n", "width", 3),   # both comment styles
    ("[net]\nwidth=3\nwidth=5\n", "width", 3),                # first occurrence wins
    ("[net]\nwidth=3  # the width\n", "width", 3),            # trailing comment
])
def test_reads_darknet_syntax(text, key, want):
    assert C.parse(text).net.get_int(key) == want


@pytest.mark.parametrize("header, canonical", [
    ("conv", "convolutional"), ("max", "maxpool"), ("avg", "avgpool"), ("conn", "connected"),
    ("soft", "softmax"), ("local_avg", "local_avgpool"), ("network", "net"), ("lrn",
                                                                               "normalization"),
    ("silence", "empty"), ("Gaussian_yolo", "gaussian_yolo"), ("reorg", "reorg"),
])
def test_section_aliases(header, canonical):
    text = NET + f"[{header}]\n" if header != "network" else f"[{header}]\nwidth=1\n"
    secs = C.parse(text).sections
    assert secs[-1].type == canonical


@pytest.mark.parametrize("text, line, fragment", [
    ("width=3\n[net]\n", 1, "before any [section]"),
    (NET + "[convolutonal]\nfilters=3\n", 5, "did you mean [convolutional]"),
    (NET + "[convolutional]\nfilters\n", 6, "expected key=value"),
    ("[convolutional]\nfilters=3\n", 1, "first section must be [net]"),
    ("", 1, "no sections"),
    (NET + "[net]\n", 5, "only once"),
])
def test_syntax_errors_name_the_line(text, line, fragment):
    with pytest.raises(CfgError) as e:
        C.parse(text, "my.cfg")
    assert e.value.line == line and fragment in str(e.value)
    assert str(e.value).startswith(f"my.cfg:{line}:")


@pytest.mark.parametrize("body, option, fragment", [
    ("[convolutional]\nfilters=abc\n", "filters", "expected an integer, got 'abc'"),
    ("[convolutional]\nfilters=16\nsize=3\nactivation=leaky\n[route]\nlayers=-9\n", "layers",
     "points before layer 0"),
    ("[convolutional]\nfilters=16\nsize=3\nactivation=leaky\n[route]\nlayers=3\n", "layers",
     "not before this layer"),
    ("[shortcut]\nfrom=-5\n", "from", "points before layer 0"),
    ("[convolutional]\nfilters=16\nactivation=leakyy\n", "activation", "did you mean 'leaky'"),
    ("[convolutional]\nfilters=254\nsize=1\nactivation=linear\n[yolo]\nmask=0,1,2\nnum=3\n"
     "classes=80\n", None, "(classes + 5) * len(mask)"),
])
def test_semantic_errors_name_section_layer_and_option(body, option, fragment):
    cfg = C.parse(NET + body, "bad.cfg")
    with pytest.raises(CfgError) as e:
        shapes.infer(cfg)
    msg = str(e.value)
    assert fragment in msg and msg.startswith("bad.cfg:") and "(layer " in msg
    assert e.value.option == option


def test_error_line_points_at_the_option():
    text = NET + "[convolutional]\nfilters=16\nsize=3\nactivation=leaky\n\n[route]\nlayers=-9\n"
    with pytest.raises(CfgError) as e:
        shapes.infer(C.parse(text, "x.cfg"))
    assert e.value.line == text.splitlines().index("layers=-9") + 1
    assert str(e.value).startswith(f"x.cfg:{e.value.line}: [route] (layer 1): option 'layers':")


def test_unused_options_are_reported_with_a_suggestion():
    cfg = C.parse(NET + "[convolutional]\nfilter=16\nsize=3\nactivation=leaky\nbogus=1\n"
                  "size=5\n", "u.cfg")
    shapes.infer(cfg)
    found = [str(u) for u in C.unused_options(cfg)]
    assert len(found) == 3
    assert "option 'filter': unused option - did you mean 'filters'?" in found[0]
    assert "'bogus': unused option" in found[1]
    assert "'size': repeated option" in found[2]
    assert found[0].startswith("u.cfg:6:")


@needs_shared
@pytest.mark.parametrize("path", darknet_cfgs(), ids=cfg_id)
def test_writer_keeps_every_line(path):
    with open(path, "rb") as f:
        text = f.read().decode("utf-8", "replace")
    cfg = C.parse(text)
    assert cfg.to_text() == text
    again = C.parse(cfg.to_text(canonical=True))   # canonical form keeps every option
    assert [(s.header, [(o.key, o.value) for o in s.options]) for s in again.sections] == \
        [(s.header, [(o.key, o.value) for o in s.options]) for s in cfg.sections]


def test_rewrites_change_what_they_say_and_nothing_else(tmp_path):
    src = os.path.join(CFGS, "yolov3.cfg")
    before = open(src).read()
    cfg = C.load(src)
    out = C.rewrite(cfg, classes=3, width=320, height=256, channels=1, batch=4)
    assert open(src).read() == before and cfg.to_text() == before     # input untouched
    heads = [s for s in out.sections if s.type == "yolo"]
    assert [s.get_int("classes") for s in heads] == [3, 3, 3]
    feeds = [out.sections[out.sections.index(s) - 1] for s in heads]
    assert [s.get_int("filters") for s in feeds] == [(3 + 5) * 3] * 3
    assert (out.net.get_int("width"), out.net.get_int("height"), out.net.get_int("channels"),
            out.net.get_int("batch"), out.net.get_int("subdivisions")) == (320, 256, 1, 4, 1)
    changed = [(a, b) for a, b in zip(before.splitlines(), out.to_text().splitlines()) if a != b]
    # classes x3, filters x3, width/height/channels/batch (subdivisions is already 1)
    assert len(changed) == 3 + 3 + 4
    path = tmp_path / "out.cfg"
    C.save(out, str(path))
    net = shapes.infer(str(path))                  # the written cfg parses back
    assert [l.output for l in net.heads] == [(10, 8, 24), (20, 16, 24), (40, 32, 24)]


def test_width_scale_keeps_output_convs():
    cfg = C.rewrite(C.load(os.path.join(CFGS, "darknet53.cfg")), width_scale=0.25)
    convs = [s for s in cfg.sections if s.type == "convolutional"]
    assert convs[0].get_int("filters") == 8 and convs[-1].get_int("filters") == 1000


# --- fuzz: random and mutated cfg text gives a result or a CfgError, never anything else ---------

_TINY = open(os.path.join(CFGS, "yolov3-tiny.cfg")).read()
_ALPHABET = st.sampled_from(list("[]=#;,-.0123456789 \n\tabcdefghijklmnoprstuvwxyz_"))


def _check_no_crash(text):
    try:
        shapes.infer(C.parse(text, "fuzz.cfg"))
    except CfgError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(_ALPHABET, max_size=300))
def test_fuzz_random_text(text):
    _check_no_crash(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(_TINY)), st.integers(0, 12), st.text(_ALPHABET,
                                                                                    max_size=8)),
                min_size=1, max_size=4))
def test_fuzz_mutated_cfg(edits):
    text = _TINY
    for pos, cut, insert in edits:
        text = text[:pos] + insert + text[pos + cut:]
    _check_no_crash(text)


# --- issue 11's smaller things ----------------------------------------------------------------------

def test_utf8_bom_is_accepted_and_kept(tmp_path):
    """A Windows editor's BOM before [net]: darknet's files have one; it is read as nothing and
    written back as read."""
    p = tmp_path / "bom.cfg"
    p.write_bytes(b"\xef\xbb\xbf" + _TINY.encode())
    cfg = C.load(str(p))
    assert cfg.net.header == "net" and cfg.to_text().encode("utf-8") == p.read_bytes()
    assert shapes.infer(cfg).totals()["layers"] == 24


def test_binary_junk_is_shown_as_a_short_escaped_excerpt(tmp_path):
    p = tmp_path / "junk.cfg"
    p.write_bytes(b"[net]\nwidth=1\n\x89PNG\x1a\x0b\xff\xfe" + bytes(range(128, 255)) + b"\n")
    with pytest.raises(CfgError) as e:
        C.load(str(p))
    msg = str(e.value)
    assert msg.startswith(f"{p}:3: [net] (net): expected key=value, got '\\x89PNG")
    assert msg.isprintable() and len(msg) < len(str(p)) + 120


def test_classes_on_a_keypoint_cfg_sets_its_heads():
    cfg = C.rewrite(C.load(os.path.join(CFGS, "yolo_kp.cfg")), classes=3)
    heads = [s for s in cfg.sections if s.type == "keypoint"]
    assert len(heads) == 3 and all(s.get_int("classes") == 3 for s in heads)
    with pytest.raises(CfgError, match="no \\[yolo\\]"):
        C.rewrite(C.load(os.path.join(CFGS, "darknet53.cfg")), classes=3)
