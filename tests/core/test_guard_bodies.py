"""What the guard parses of a body is bounded (max_json_body, a cap on values), strict, and read with the same
key spellings a lenient backend accepts (review of issue 12, findings 1-3)."""

from __future__ import annotations

import json

import pytest
from test_guard import World, call, code_of, guard

from authmw.settings import Settings

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def world() -> World:
    return World()


# -- finding 1: bounded work ------------------------------------------------------------------------------------


def test_a_body_to_parse_larger_than_max_json_body_is_refused(world: World) -> None:
    body = json.dumps({"workspace_id": "0", "pad": "x" * (1 << 20)}).encode()
    assert code_of(guard(world), call("POST", body=body, headers=JSON)) == "json_body_too_large"
    assert guard(world, max_json_body=2 << 20).check(call("POST", body=body, headers=JSON)).workspace_id == "0"


@pytest.mark.parametrize("item", [b"{}", b"[]", b"1"], ids=["objects", "arrays", "numbers"])
def test_a_body_with_too_many_values_is_refused_before_it_is_parsed(world: World, item: bytes) -> None:
    # 12 MiB of [{},{},...] cost 5 s and 650 MB as a tree: the count of , { [ bounds the values without parsing.
    body = b"[" + (item + b",") * 30_000 + b'"workspace"]'
    assert len(body) < 1 << 20
    assert code_of(guard(world), call("POST", body=body, headers=JSON)) == "json_body_too_large"


def test_a_large_body_that_cannot_name_a_workspace_is_not_parsed(world: World) -> None:
    body = b"[" + b"{}," * 500_000 + b"{}]"
    assert guard(world).check(call("POST", body=body, headers=JSON)).workspace_id == "0"


def test_max_json_body_is_a_setting() -> None:
    assert Settings().max_json_body == 1 << 20
    assert Settings.from_mapping({"max_json_body": 4096}).max_json_body == 4096
