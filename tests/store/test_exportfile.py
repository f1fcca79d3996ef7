"""The export file layout: valid YAML for any tool, read back by authmw line by line at JSON speed."""

from __future__ import annotations

import time

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from authmw.store import exportfile
from tests.support.budget import examples

DOCUMENT = {
    "format": "authmw-export/1",
    "secrets_salt": "c2FsdA==",
    "domains": [{"id": "a" * 32, "name": "default", "created_at": 1}],
    "users": [
        {"id": "b" * 32, "name": "ünï-cödé", "enabled": False, "password_changed_at": None, "created_at": 2},
        {"id": "c" * 32, "name": "x: y # not a comment", "enabled": True, "created_at": 3},
    ],
    "policies": [
        {
            "document": {
                "Version": "1.1",
                "Statement": [{"Effect": "Allow", "Action": ["modelarts:*:*"], "Condition": {"k": ["*", "- x"]}}],
            }
        }
    ],
    "signing_keys": [],
    "mac": "00ff",
}


def test_any_yaml_tool_reads_the_same_document() -> None:
    text = exportfile.dumps(DOCUMENT)
    assert yaml.safe_load(text) == DOCUMENT
    assert exportfile.loads(text) == DOCUMENT
    assert text.count("\n") == 11  # one line per scalar, per list and per row


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=examples(300), deadline=None)
@given(rows=st.lists(st.dictionaries(st.text(max_size=8), json_values, max_size=4), max_size=4))
def test_rows_round_trip_and_agree_with_yaml(rows: list[dict[str, object]]) -> None:
    document = {"format": "authmw-export/1", "users": rows}
    text = exportfile.dumps(document)
    assert exportfile.loads(text) == document
    assert yaml.safe_load(text) == document


def test_other_layouts_and_json_are_read_through_a_safe_loader() -> None:
    block = yaml.safe_dump(DOCUMENT, sort_keys=False)
    assert exportfile.loads(block) == DOCUMENT
    import json

    assert exportfile.loads(json.dumps(DOCUMENT)) == DOCUMENT
    with pytest.raises(exportfile.ExportFileError, match="aliases"):
        exportfile.loads("a: &x [1, 2]\nb: *x\n")
    with pytest.raises(exportfile.ExportFileError, match="not valid YAML"):
        exportfile.loads("a: [unclosed\n")
    with pytest.raises(exportfile.ExportFileError):
        exportfile.loads("!!python/object:os.system {}\n")


def test_a_large_export_reads_fast() -> None:
    rows = [{"id": f"{i:032x}", "name": f"user{i}", "enabled": True, "created_at": i} for i in range(100_000)]
    text = exportfile.dumps({"format": "authmw-export/1", "users": rows})
    started = time.perf_counter()
    assert len(exportfile.loads(text)["users"]) == 100_000
    assert time.perf_counter() - started < 5  # a YAML loader needs about a minute for this
