"""YAML loading: positions, bad input of every kind, never a traceback or a hang."""

from __future__ import annotations

import random

import pytest

from reconciler.loading import MAX_NODES, load_text


def only(findings):
    assert len(findings) == 1, [f.text() for f in findings]
    return findings[0]


def test_positions_of_keys_and_values_are_one_based():
    text = "a:\n  b: [x, {c: 1}]\n  d: |\n    text\n"
    doc = load_text("f.yaml", text.encode()).documents[0]
    assert doc.data == {"a": {"b": ["x", {"c": 1}], "d": "text\n"}}
    assert doc.positions.key(("a", "b")) == (2, 3)
    assert doc.positions.value(("a", "b")) == (2, 6)
    assert doc.positions.value(("a", "b", 1, "c")) == (2, 14)
    assert doc.positions.key(("a", "d")) == (3, 3)
    # a path that does not exist falls back to its nearest ancestor
    assert doc.positions.value(("a", "b", 1, "missing")) == (2, 10)


@pytest.mark.parametrize(
    ("text", "rule", "line", "col", "words"),
    [
        ("a: [1, 2\nb: 3\n", "yaml-syntax", 2, 2, "invalid YAML"),
        ("a:\n\tb: 1\n", "yaml-tab", 2, 1, "tab character"),
        ("name: x\nname: y\n", "yaml-duplicate-key", 2, 1, "duplicate key 'name' (first written at line 1)"),
        ("? [a, b]\n: 1\n", "yaml-key-type", 1, 3, "mapping keys must be plain strings"),
        ("a: &x [*x]\n", "yaml-alias-bomb", 1, 8, "recursive alias"),
        ("a: *nope\n", "yaml-syntax", 1, 4, "undefined alias"),
    ],
)
def test_bad_yaml_is_one_clear_finding(text, rule, line, col, words):
    f = only(load_text("bad.yaml", text.encode()).findings)
    assert (f.rule, f.line, f.col) == (rule, line, col)
    assert words in f.message
    assert f.is_error


def test_non_utf8_names_the_byte_and_its_line():
    raw = b"a: 1\nb: caf" + b"\xe9\n"
    f = only(load_text("latin1.yaml", raw).findings)
    assert f.rule == "yaml-encoding"
    assert (f.line, f.col) == (2, 7)
    assert "0xe9" in f.message


def test_size_cap():
    f = only(load_text("big.yaml", b"a: 1\n" * 1000, max_bytes=100).findings)
    assert f.rule == "yaml-too-large"
    assert "100 bytes" in f.message


def test_billion_laughs_is_refused_quickly_and_safely():
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        prev, cur = chr(96 + i), chr(97 + i)
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    f = only(load_text("bomb.yaml", "\n".join(lines).encode()).findings)
    assert f.rule == "yaml-alias-bomb"
    assert f"more than {MAX_NODES:,} values" in f.message


def test_anchors_and_merge_keys_within_limits():
    text = "base: &b {x: 1, y: 2}\nthing:\n  <<: *b\n  y: 3\nlist: [*b, *b]\n"
    doc = load_text("m.yaml", text.encode()).documents[0]
    assert doc.data["thing"] == {"x": 1, "y": 3}
    assert doc.data["list"] == [{"x": 1, "y": 2}] * 2


def test_multi_document_files_keep_each_document_and_its_index():
    text = "a: 1\n---\n---\nb: 2\n...\n---\n# only a comment\n"
    loaded = load_text("multi.yaml", text.encode())
    assert [(d.index, d.data) for d in loaded.documents] == [(0, {"a": 1}), (2, {"b": 2})]
    assert loaded.documents[1].positions.key(("b",)) == (4, 1)


def test_yaml_12_scalars():
    doc = load_text(
        "s.yaml", b"k: [yes, on, 1.0, 0o12, 012, 0x1F, 1e3, null, ~, true, '1.0', .inf]\n"
    ).documents[0]
    assert doc.data["k"] == ["yes", "on", 1.0, 10, 12, 31, 1000.0, None, None, True, "1.0", float("inf")]


def test_custom_tags_are_text_never_objects():
    doc = load_text("t.yaml", b"a: !!python/object:os.system echo\nb: !!int '7'\n").documents[0]
    assert doc.data == {"a": "echo", "b": 7}


def test_flow_values_libyaml_refuses_still_load():
    # libyaml (YAML 1.1) rejects ':' inside a flow plain scalar; YAML 1.2 allows it.
    doc = load_text("f.yaml", b"source: {name: a1, image: reg/adapter:1}\n").documents[0]
    assert doc.data == {"source": {"name": "a1", "image": "reg/adapter:1"}}


def test_deep_nesting_is_bounded():
    text = "a: " + "[" * 500 + "]" * 500 + "\n"
    f = only(load_text("deep.yaml", text.encode()).findings)
    assert f.rule in ("yaml-alias-bomb", "yaml-syntax", "yaml-too-deep")


def test_random_garbage_never_raises():
    rnd = random.Random(7)
    alphabet = b"ab:-[]{}&*!|>'\"#\n\t %@`,?~0123456789\xff\xfe"
    for _ in range(2000):
        raw = bytes(rnd.choice(alphabet) for _ in range(rnd.randint(0, 60)))
        loaded = load_text("fuzz.yaml", raw)
        for f in loaded.findings:
            assert f.line >= 1 and f.col >= 1 and f.message
