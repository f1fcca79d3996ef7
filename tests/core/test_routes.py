"""The route catalog (templates → actions), the one strict reading of a request path, and the modelarts preset."""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from authmw.errors import AmbiguousPath, ConfigurationError, InvalidEncoding, InvalidPathParameter
from authmw.routes import (
    PATH_ALLOWANCES,
    Access,
    Match,
    Route,
    RouteCatalog,
    Routes,
    Unmatched,
    check_allowed,
    json_path,
    modelarts_inferred_actions,
    modelarts_routes,
    parse_path,
    route_from_mapping,
)

ACTIONS_TSV = Path(__file__).resolve().parents[1] / "data" / "research" / "modelarts_actions.tsv"
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\+?\}")


def catalog(*routes: Route, unmatched: Unmatched | str = Unmatched.DENY) -> RouteCatalog:
    return RouteCatalog(routes, unmatched=unmatched)


def find(routes: RouteCatalog, method: str, path: str) -> Match | None:
    return routes.match(method, parse_path(path).segments)


def action_of(routes: RouteCatalog, method: str, path: str) -> str | None:
    found = find(routes, method, path)
    return None if found is None else found.route.action


# -- templates -------------------------------------------------------------------------------------------


def test_a_parameter_takes_one_decoded_segment() -> None:
    routes = catalog(Route("GET", "/v1/{project_id}/notebooks/{id}", "modelarts:notebook:get"))
    found = find(routes, "GET", "/v1/p1/notebooks/n%20b")
    assert found is not None
    assert found.route.action == "modelarts:notebook:get"
    assert found.params == {"project_id": "p1", "id": "n b"}
    assert find(routes, "GET", "/v1/p1/notebooks") is None
    assert find(routes, "GET", "/v1/p1/notebooks/n1/more") is None


def test_a_rest_parameter_takes_one_or_more_segments() -> None:
    routes = catalog(Route("GET", "/files/{bucket}/{key+}", "obs:object:GetObject"))
    found = find(routes, "GET", "/files/b1/a/b/c.txt")
    assert found is not None
    assert found.params == {"bucket": "b1", "key": "a/b/c.txt"}
    one = find(routes, "GET", "/files/b1/k")
    assert one is not None
    assert one.params == {"bucket": "b1", "key": "k"}
    assert find(routes, "GET", "/files/b1") is None
    assert find(routes, "GET", "/files/b1/") is None  # a trailing slash adds no segment
    assert find(routes, "GET", "/files/b1/a//b") is None  # no empty segment inside the rest


def test_a_rest_parameter_must_come_last() -> None:
    with pytest.raises(ConfigurationError, match="must come last"):
        catalog(Route("GET", "/files/{key+}/meta", "obs:object:GetObject"))


def test_literal_segments_beat_parameters() -> None:
    routes = catalog(
        Route("GET", "/v1/{project_id}/images/{id}", "modelarts:image:get"),
        Route("GET", "/v1/{project_id}/images/group", "modelarts:image:listGroup"),
        Route("GET", "/v1/{project_id}/images/{id}/{rest+}", "modelarts:image:other"),
    )
    assert action_of(routes, "GET", "/v1/p/images/group") == "modelarts:image:listGroup"
    assert action_of(routes, "GET", "/v1/p/images/groups") == "modelarts:image:get"
    assert action_of(routes, "GET", "/v1/p/images/i1") == "modelarts:image:get"
    assert action_of(routes, "GET", "/v1/p/images/i1/x/y") == "modelarts:image:other"


def test_a_literal_without_the_method_falls_back_to_the_parameter_route() -> None:
    routes = catalog(
        Route("POST", "/v1/{project_id}/images/group", "modelarts:image:createGroup"),
        Route("GET", "/v1/{project_id}/images/{id}", "modelarts:image:get"),
    )
    found = find(routes, "GET", "/v1/p/images/group")
    assert found is not None
    assert found.route.action == "modelarts:image:get"
    assert found.params == {"project_id": "p", "id": "group"}  # backtracking left no stray value behind


def test_parameters_beat_rest_parameters() -> None:
    routes = catalog(
        Route("GET", "/a/{one}", "svc:thing:one"),
        Route("GET", "/a/{many+}", "svc:thing:many"),
        Route("POST", "/a/{x}/b", "svc:thing:post"),
    )
    assert action_of(routes, "GET", "/a/x") == "svc:thing:one"
    assert action_of(routes, "GET", "/a/x/y") == "svc:thing:many"
    assert action_of(routes, "GET", "/a/x/b") == "svc:thing:many"  # the deeper literal has no GET route


def test_method_star_matches_any_method_and_a_named_method_wins() -> None:
    routes = catalog(Route("*", "/any/{x}", "svc:thing:any"), Route("POST", "/any/{x}", "svc:thing:post"))
    assert action_of(routes, "DELETE", "/any/1") == "svc:thing:any"
    assert action_of(routes, "GET", "/any/1") == "svc:thing:any"
    assert action_of(routes, "POST", "/any/1") == "svc:thing:post"
    assert routes.routes[0].name == "* /any/{x}"


def test_methods_are_told_apart() -> None:
    routes = catalog(
        Route("GET", "/v1/{project_id}/notebooks", "modelarts:notebook:list"),
        Route("POST", "/v1/{project_id}/notebooks", "modelarts:notebook:create"),
    )
    assert action_of(routes, "GET", "/v1/p/notebooks") == "modelarts:notebook:list"
    assert action_of(routes, "POST", "/v1/p/notebooks") == "modelarts:notebook:create"
    assert action_of(routes, "DELETE", "/v1/p/notebooks") is None


def test_head_is_served_by_the_get_route() -> None:
    # RFC 9110 §9.3.2: HEAD is GET without a body, and Starlette, Flask and Django answer HEAD with the GET
    # handler. Unmatched, HEAD would get the `unmatched` treatment (public / authenticate-only) and run the
    # GET handler without its action being checked.
    routes = catalog(Route("GET", "/v1/{project_id}/notebooks/{id}", "modelarts:notebook:get"))
    assert action_of(routes, "HEAD", "/v1/p/notebooks/n1") == "modelarts:notebook:get"
    explicit = catalog(
        Route("GET", "/v1/{project_id}/notebooks/{id}", "modelarts:notebook:get"),
        Route("HEAD", "/v1/{project_id}/notebooks/{id}", "modelarts:notebook:head"),
    )
    assert action_of(explicit, "HEAD", "/v1/p/notebooks/n1") == "modelarts:notebook:head"


@pytest.mark.parametrize("path", ["/v1/p/notebooks", "/v1/p/notebooks/"], ids=["bare", "trailing-slash"])
def test_a_trailing_slash_names_the_same_resource(path: str) -> None:
    routes = catalog(Route("GET", "/v1/{project_id}/notebooks", "modelarts:notebook:list"))
    assert action_of(routes, "GET", path) == "modelarts:notebook:list"


def test_the_root_route() -> None:
    routes = catalog(Route("GET", "/", "svc:root:get"), Route("GET", "/x", "svc:x:get"))
    assert action_of(routes, "GET", "/") == "svc:root:get"
    assert action_of(routes, "GET", "/x") == "svc:x:get"
    assert find(routes, "GET", "//") is None


def test_different_parameter_names_at_the_same_position() -> None:
    routes = catalog(
        Route("GET", "/v2/{project_id}/datasets/{dataset_id}/export-tasks", "modelarts:dataset:getDataset"),
        Route("GET", "/v2/{project_id}/datasets/{resource_id}/export-tasks/{task_id}", "modelarts:dataset:task"),
        Route("POST", "/v1/{project_id}/notebooks/{instance_id}/storage", "modelarts:notebook:mountStorage"),
        Route("GET", "/v1/{project_id}/notebooks/{id}", "modelarts:notebook:get"),
    )
    listed = find(routes, "GET", "/v2/p/datasets/d1/export-tasks")
    one = find(routes, "GET", "/v2/p/datasets/d1/export-tasks/t1")
    storage = find(routes, "POST", "/v1/p/notebooks/n1/storage")
    notebook = find(routes, "GET", "/v1/p/notebooks/n1")
    assert listed is not None and listed.params == {"project_id": "p", "dataset_id": "d1"}
    assert one is not None and one.params == {"project_id": "p", "resource_id": "d1", "task_id": "t1"}
    assert storage is not None and storage.params == {"project_id": "p", "instance_id": "n1"}
    assert notebook is not None and notebook.params == {"project_id": "p", "id": "n1"}


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("/a/b", "/a/b"),
        ("/a/{x}", "/a/{y}"),  # the same shape under other names is the same route
        ("/a/{x+}", "/a/{y+}"),
    ],
)
def test_duplicates_are_refused(first: str, second: str) -> None:
    with pytest.raises(ConfigurationError, match="defined twice"):
        catalog(Route("GET", first, "svc:thing:a"), Route("GET", second, "svc:thing:b"))


def test_the_same_template_under_two_methods_is_not_a_duplicate() -> None:
    routes = catalog(Route("GET", "/a/{x}", "svc:thing:a"), Route("PUT", "/a/{x}", "svc:thing:b"))
    assert len(routes.routes) == 2


def test_a_parameter_name_used_twice_is_refused() -> None:
    # /a/{x}/{x} would silently keep the last value for `x`, in the params and in the resource URN.
    with pytest.raises(ConfigurationError):
        catalog(Route("GET", "/a/{x}/{x}", "svc:thing:get"))


@pytest.mark.parametrize(
    "template",
    [
        "",
        "a/b",
        "/a/",
        "//a",
        "/a//b",
        "/a/{",
        "/a/{x",
        "/a/x}",
        "/a/{}",
        "/a/{1x}",
        "/a/{x-y}",
        "/a/{x}{y}",
        "/a/b{x}",
        "/a/{x}.json",
        "/a/{x+}/b",
        "/a/{+x}",
    ],
)
def test_bad_templates_are_refused(template: str) -> None:
    with pytest.raises(ConfigurationError):
        catalog(Route("GET", template, "svc:thing:get"))


@pytest.mark.parametrize(
    ("route", "message"),
    [
        (Route("get", "/a", "svc:thing:get"), "unknown method"),
        (Route("FETCH", "/a", "svc:thing:get"), "unknown method"),
        (Route("GET", "/a"), "needs an action"),
        (Route("GET", "/a", "svc:thing"), "service:type:operation"),
        (Route("GET", "/a", "svc:thing:get:more"), "service:type:operation"),
        (Route("GET", "/a", "svc thing:get"), "service:type:operation"),
        (Route("GET", "/a", "svc:thing:get", body_actions=(("status", "bad"),)), "service:type:operation"),
        (Route("GET", "/a", "svc:thing:get", path_allow=frozenset({"dot-segments"})), "path_allow"),
    ],
    ids=["lower-case", "unknown", "no-action", "two-parts", "four-parts", "space", "body-action", "allowance"],
)
def test_bad_routes_are_refused(route: Route, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        catalog(route)


def test_public_and_authenticate_only_routes_need_no_action() -> None:
    routes = catalog(
        Route("GET", "/health", access=Access.PUBLIC), Route("GET", "/me", access=Access.AUTHENTICATE_ONLY)
    )
    assert routes.actions == ()
    found = find(routes, "GET", "/health")
    assert found is not None and found.route.access is Access.PUBLIC


def test_unmatched_policy() -> None:
    assert catalog().unmatched is Unmatched.DENY
    assert catalog(unmatched="authenticate-only").unmatched is Unmatched.AUTHENTICATE_ONLY
    assert catalog(unmatched=Unmatched.PUBLIC).unmatched is Unmatched.PUBLIC
    with pytest.raises(ConfigurationError, match="unmatched"):
        catalog(unmatched="allow")


def test_actions_include_body_actions_once_and_sorted() -> None:
    routes = catalog(
        Route("PUT", "/s/{id}", "svc:service:update", body_actions=(("status", "svc:service:action"),)),
        Route("GET", "/s/{id}", "svc:service:get"),
        Route("GET", "/s", "svc:service:get"),
    )
    assert routes.actions == ("svc:service:action", "svc:service:get", "svc:service:update")


def test_match_fills_the_resource_template() -> None:
    route = Route("GET", "/obs/{bucket}/{key+}", "obs:object:GetObject", resource="obs:*:*:object:{bucket}/{key}")
    found = find(catalog(route), "GET", "/obs/b1/dir/file%20name")
    assert found is not None
    assert found.resource() == "obs:*:*:object:b1/dir/file name"
    assert find(catalog(Route("GET", "/x", "svc:x:get")), "GET", "/x").resource() is None  # type: ignore[union-attr]


def test_a_resource_naming_no_path_parameter_is_refused() -> None:
    # It used to be filled with a literal '*' (text no path parameter checked): now the catalog refuses it.
    route = Route("GET", "/obs/{bucket}", "obs:object:GetObject", resource="obs:*:*:object:{bucket}/{absent}")
    with pytest.raises(ConfigurationError, match="absent"):
        catalog(route)
    with pytest.raises(ConfigurationError, match="as \\{name\\}"):
        catalog(Route("GET", "/r/{id:int}", "svc:r:get", resource="svc:*:*:r:{id:int}"))


# -- parse_path ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "segments", "uses"),
    [
        ("/", (), set()),
        ("/a/b", ("a", "b"), set()),
        ("/a/b/", ("a", "b"), set()),
        ("/a%20b", ("a b",), set()),
        ("/a+b", ("a+b",), set()),  # "+" is a space in queries only
        ("/caf%C3%A9", ("café",), set()),
        ("/caf%c3%a9", ("café",), set()),
        ("/café", ("café",), set()),
        ("/%41%42", ("AB",), set()),
        ("/a%3Bb", ("a;b",), set()),  # an encoded ";" is data, not a path parameter
        ("/a%252Fb", ("a%2Fb",), set()),  # decoded once, never twice
        ("/a;v=1/b", ("a;v=1", "b"), {"semicolon"}),
        ("/a%2Fb", ("a/b",), {"encoded-slash"}),
        ("/a%2fb", ("a/b",), {"encoded-slash"}),
        ("/a%5Cb", ("a\\b",), {"encoded-slash"}),
        ("/file%2Ejson", ("file.json",), {"encoded-dot"}),
        ("/x;y/a%2Fb%2e", ("x;y", "a/b."), {"semicolon", "encoded-slash", "encoded-dot"}),
        ("/a/...", ("a", "..."), set()),  # not a dot segment
        ("/a/.b/..c", ("a", ".b", "..c"), set()),
    ],
)
def test_parse_path(raw: str, segments: tuple[str, ...], uses: set[str]) -> None:
    parsed = parse_path(raw)
    assert parsed.segments == segments
    assert parsed.uses == frozenset(uses)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "a/b",
        "*",
        "/%",
        "/a%",
        "/%4",
        "/%zz",
        "/%G1",
        "/a%2",
        "/%FF",
        "/a%C3",  # truncated UTF-8
        "/%C0%AF",  # overlong "/"
        "/%ED%A0%80",  # an encoded surrogate
        "/a\udcff",  # raw bytes that were not UTF-8 (Request.build keeps them as surrogate escapes)
        "/a%41\udcff",  # the same, in a segment that also has percent-encoding
    ],
    ids=repr,
)
def test_invalid_encoding(raw: str) -> None:
    with pytest.raises(InvalidEncoding):
        parse_path(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "/.",
        "/..",
        "/a/./b",
        "/a/../b",
        "/a/..",
        "/a/../",
        "/%2e",
        "/%2E%2E",
        "/.%2e",
        "/%2e./x",
        "/a/%2e%2e/b",
        "/a%00b",
        "/a\x00b",
        "/a%0Ab",
        "/a%0d%0aX-Injected:%201",
        "/a\tb",
        "/a%09b",
        "/a%1Fb",
        "/a%7Fb",
        "/a\x7fb",
    ],
    ids=repr,
)
def test_dot_segments_and_control_characters_are_ambiguous(raw: str) -> None:
    with pytest.raises(AmbiguousPath):
        parse_path(raw)


def test_every_allowance_is_known() -> None:
    assert frozenset({"encoded-slash", "encoded-dot", "semicolon", "empty-segment"}) == PATH_ALLOWANCES


@pytest.mark.parametrize(
    ("raw", "allow", "strict", "refused"),
    [
        ("/files/a%2Fb", set(), True, "encoded-slash"),
        ("/files/a%2Fb", {"encoded-slash"}, True, None),
        ("/files/a%2Eb", set(), True, "encoded-dot"),
        ("/files/a%2Eb", {"encoded-dot"}, True, None),
        ("/files/a;b", set(), True, "semicolon"),
        ("/files/a;b", {"semicolon"}, True, None),
        ("/files/a;b%2Fc", {"semicolon"}, True, "encoded-slash"),
        ("/files/a;b%2Fc", {"semicolon", "encoded-slash"}, True, None),
        ("/files/a%2Fb", set(), False, None),  # strict_paths=False: allowances are not checked
        ("/files/plain", set(), True, None),
    ],
)
def test_check_allowed_per_route(raw: str, allow: set[str], strict: bool, refused: str | None) -> None:
    route = Route("GET", "/files/{key+}", "obs:object:GetObject", path_allow=frozenset(allow))
    parsed = parse_path(raw)
    assert find(catalog(route), "GET", raw) is not None
    if refused is None:
        check_allowed(parsed, route, strict)
    else:
        with pytest.raises(AmbiguousPath, match=refused):
            check_allowed(parsed, route, strict)


def test_an_unmatched_path_gets_no_allowance() -> None:
    with pytest.raises(AmbiguousPath):
        check_allowed(parse_path("/x/a%2Fb"), None, True)
    check_allowed(parse_path("/x/a%2Fb"), None, False)
    check_allowed(parse_path("/x/a"), None, True)


@pytest.mark.parametrize(
    "raw", ["/files/a%2F..%2Fsecret", "/files/a%2F.", "/files/..%2Fadmin", "/files/a%5C..%5Cb"], ids=repr
)
def test_an_encoded_slash_allowance_does_not_let_dot_segments_through(raw: str) -> None:
    # "Dot segments ... are refused for every route": once %2F is decoded, "a/../secret" holds one, and an
    # upstream that decodes %2F before normalising (nginx, Starlette's scope["path"]) resolves it.
    route = Route("GET", "/files/{key+}", "obs:object:GetObject", path_allow=frozenset({"encoded-slash"}))
    with pytest.raises(AmbiguousPath):
        check_allowed(parse_path(raw), route, True)


# -- route_from_mapping ----------------------------------------------------------------------------------


def test_route_from_mapping_reads_every_key() -> None:
    route = route_from_mapping(
        {
            "method": "put",
            "path": "/v1/{project_id}/services/{service_id}",
            "action": "modelarts:service:update",
            "access": "protected",
            "resource": "modelarts:*:*:service:{service_id}",
            "body_actions": {"status": "modelarts:service:action"},
            "path_allow": ["semicolon", "encoded-dot"],
        },
        origin="routes[0]",
    )
    assert route == Route(
        "PUT",
        "/v1/{project_id}/services/{service_id}",
        "modelarts:service:update",
        Access.PROTECTED,
        "modelarts:*:*:service:{service_id}",
        (("status", "modelarts:service:action"),),
        frozenset({"semicolon", "encoded-dot"}),
    )
    catalog(route)  # and the catalog takes it


def test_route_from_mapping_defaults() -> None:
    route = route_from_mapping({"path": "/healthz", "access": "public"}, origin="routes[1]")
    assert route == Route("*", "/healthz", None, Access.PUBLIC)
    assert route_from_mapping({"path": "/me", "access": "authenticate-only"}, origin="o").access is (
        Access.AUTHENTICATE_ONLY
    )
    assert (
        route_from_mapping({"path": "/x", "action": "svc:x:get", "body_actions": None}, origin="o").body_actions == ()
    )


def test_route_from_mapping_refuses_unknown_keys() -> None:
    with pytest.raises(ConfigurationError, match=r"routes\[2\]: unknown route key\(s\) actions, methods; known:"):
        route_from_mapping({"path": "/x", "actions": ["a:b:c"], "methods": ["GET"]}, origin="routes[2]")


def test_route_from_mapping_needs_a_path() -> None:
    with pytest.raises(ConfigurationError, match="needs a path"):
        route_from_mapping({"method": "GET", "action": "svc:x:get"}, origin="o")


@pytest.mark.parametrize(
    "data",
    [
        {"path": 5},
        {"path": None},
        {"path": ["/x"]},
        {"path": "/x", "access": "private"},
        {"path": "/x", "access": ["public"]},
        {"path": "/x", "action": 5},
        {"path": "/x", "action": ["svc:x:get"]},
        {"path": "/x", "resource": 5},
        {"path": "/x", "body_actions": ["status"]},
        {"path": "/x", "body_actions": "status"},
        {"path": "/x", "path_allow": "encoded-slash"},
        {"path": "/x", "path_allow": {"encoded-slash": True}},
    ],
    ids=repr,
)
def test_route_from_mapping_refuses_bad_types(data: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="route fields"):
        route_from_mapping(data, origin="o")


@pytest.mark.parametrize("method", [["GET"], None, 5, {"GET": 1}], ids=repr)
def test_route_from_mapping_refuses_a_method_that_is_not_text(method: object) -> None:
    # Its own message says "method and path are text"; str(["GET"]) must not become the method "['GET']".
    with pytest.raises(ConfigurationError):
        route_from_mapping({"method": method, "path": "/x", "action": "svc:x:get"}, origin="o")


@pytest.mark.parametrize("data", [{"path": "/x", 1: "one"}, {"path": "/x", 1: "one", None: "none"}], ids=repr)
def test_route_from_mapping_refuses_keys_that_are_not_text(data: Mapping[Any, Any]) -> None:
    # YAML allows `1:` or `null:` as keys: a configuration error, not a TypeError from sorted()/join().
    with pytest.raises(ConfigurationError, match="unknown route key"):
        route_from_mapping(data, origin="o")


@pytest.mark.parametrize("data", [["/x"], "/x", None], ids=repr)
def test_route_from_mapping_needs_a_mapping(data: Any) -> None:
    with pytest.raises(ConfigurationError, match="a route is a mapping"):
        route_from_mapping(data, origin="o")


# -- the modelarts preset --------------------------------------------------------------------------------

LISTED_TWICE = "modelarts:notebook:listMountedStorages"
STORAGE_LIST = ("GET", "/v1/{project_id}/notebooks/{instance_id}/storage")
SERVICE = ("PUT", "/v1/{project_id}/services/{service_id}")


def research_rows() -> list[dict[str, str]]:
    with ACTIONS_TSV.open(encoding="utf-8", newline="") as lines:
        return list(csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE))


ROWS = research_rows()
ROUTED = [row for row in ROWS if row["method"] != "-"]
UNROUTED = [row for row in ROWS if row["method"] == "-"]
PRESET = RouteCatalog(modelarts_routes())


def concrete(template: str) -> tuple[str, dict[str, str]]:
    """A request path for ``template`` and the parameter values it should capture."""
    values: dict[str, str] = {}

    def fill(found: re.Match[str]) -> str:
        values[found.group(1)] = f"v{len(values)}-{found.group(1)}"
        return values[found.group(1)]

    return _PARAM.sub(fill, template), values


def test_the_research_table_is_complete() -> None:
    assert len(ROWS) == 139
    assert len(UNROUTED) == 8
    assert {row["method"] for row in ROUTED} <= {"GET", "POST", "PUT", "PATCH", "DELETE"}


@pytest.mark.parametrize(
    "row", ROUTED, ids=[f"{n:03}-{row['method']}-{row['action']}" for n, row in enumerate(ROUTED, start=2)]
)
def test_every_research_row_is_routed_to_its_action(row: dict[str, str]) -> None:
    method, template, action = row["method"], row["path"], row["action"]
    if action == LISTED_TWICE:  # documentation defect 1: the row repeats POST .../create-image
        method, template = STORAGE_LIST
    path, params = concrete(template)
    found = PRESET.match(method, parse_path(path).segments)
    assert found is not None, f"{method} {template} has no route"
    assert dict(found.params) == params
    if (method, template) == SERVICE:  # documentation defect 2: start/stop share the update route
        assert found.route.action == "modelarts:service:update"
        assert found.route.body_actions == (("status", "modelarts:service:action"),)
        assert action in {found.route.action, *(a for _f, a in found.route.body_actions)}
    else:
        assert found.route.action == action
        assert found.route.body_actions == ()
    assert found.route.access is Access.PROTECTED
    also = tuple(row["also_required_or_related"].split())
    assert found.route.also_required in {also, ()}  # the service:action row adds none of its own


def test_create_image_keeps_its_own_action() -> None:
    assert action_of(PRESET, "POST", "/v1/p/notebooks/n1/create-image") == "modelarts:image:create"
    assert action_of(PRESET, "GET", "/v1/p/notebooks/n1/storage") == LISTED_TWICE
    assert action_of(PRESET, "POST", "/v1/p/notebooks/n1/storage") == "modelarts:notebook:mountStorage"
    assert action_of(PRESET, "GET", "/v1/p/notebooks/n1/storage/s1") == "modelarts:notebook:getMountedStorage"


def packaged_rows() -> list[list[str]]:
    from importlib.resources import files

    lines = files("authmw.data").joinpath("modelarts_routes.tsv").read_text().splitlines()
    return [[*line.split("\t"), "", "", "", ""][:7] for line in lines[2:]]


SDK_ROWS = packaged_rows()[len(ROWS) :]  # after the documented rows: the official SDK's other routes


def test_the_preset_has_one_route_per_distinct_row_and_nothing_else() -> None:
    expected = {(row["method"], row["path"]) for row in ROUTED if row["action"] != LISTED_TWICE} | {STORAGE_LIST}
    expected |= {(row[0], row[1]) for row in SDK_ROWS}
    assert {(route.method, route.template) for route in PRESET.routes} == expected
    assert len(PRESET.routes) == len(ROUTED) - 1 + len(SDK_ROWS)  # the PUT services row is listed twice
    assert PRESET.unmatched is Unmatched.DENY
    assert all(not route.path_allow for route in PRESET.routes)


@pytest.mark.parametrize(
    ("method", "path", "resource"),
    [
        ("GET", "/v1/p/notebooks/nb-1", "modelarts:*:*:notebook:nb-1"),
        ("GET", "/v1/p/notebooks/nb-1/storage", "modelarts:*:*:notebook:nb-1"),
        ("POST", "/v1/p/demanager/instances/i-1/action", "modelarts:*:*:notebook:i-1"),
        ("DELETE", "/v2/p/training-jobs/j-1", "modelarts:*:*:trainJob:j-1"),
        ("GET", "/v2/p/training-jobs/j-1/tasks/worker-0/logs/url", "modelarts:*:*:trainJob:j-1"),
        ("PUT", "/v1/p/services/s-1", "modelarts:*:*:service:s-1"),
        ("DELETE", "/v1/p/models/m-1", "modelarts:*:*:model:m-1"),
        ("GET", "/v2/p/datasets/d-1/versions/v-1", "modelarts:*:*:dataset:d-1"),
        ("GET", "/v2/p/datasets/d-1/export-tasks/t-1", "modelarts:*:*:dataset:d-1"),
        ("PUT", "/v2/p/algorithms/a-1", "modelarts:*:*:aiAlgorithm:a-1"),
        ("DELETE", "/v1/p/images/i-1", "modelarts:*:*:image:i-1"),
        ("PUT", "/v1/p/workspaces/" + "a" * 32, "modelarts:*:*:workspace:" + "a" * 32),
        ("GET", "/v1/p/workspaces/" + "a" * 32 + "/quotas", "modelarts:*:*:workspace:" + "a" * 32),
        ("POST", "/v1/p/notebooks", None),  # a list or a create names no resource yet
        ("POST", "/v1/p/notebooks/nb-1/create-image", None),  # an image action on a notebook: no one type
        ("GET", "/v2/p/workforces/w-1", None),  # no documented resource type
        ("DELETE", "/v2/p/services/s-1/deployments/d-1", "modelarts:*:*:service:s-1"),  # SDK: sub-resource
        ("GET", "/v2/p/training-jobs/j-1/metrics/worker-0", "modelarts:*:*:trainJob:j-1"),
        ("PUT", "/v2/p/training-experiments/e-1", None),  # an experiment id is not a training job's
        ("GET", "/v2/p/modelarts-training-job/j-1/tags", None),  # a tag action: not the job's type
        ("PATCH", "/v2/p/pools/pool-1", None),  # pools: no resource-level permission in authmw yet
    ],
)
def test_preset_routes_with_ids_carry_resource_urns(method: str, path: str, resource: str | None) -> None:
    found = find(PRESET, method, path)
    assert found is not None and found.resource() == resource


def test_preset_routes_declare_where_the_body_names_the_workspace() -> None:
    fields = {route.name: route.workspace_fields for route in PRESET.routes if route.workspace_fields}
    assert fields["POST /v2/{project_id}/training-jobs"] == ("metadata.workspace_id",)
    assert fields["POST /v2/{project_id}/algorithms"] == ("metadata.workspace_id",)
    assert fields["PUT /v2/{project_id}/algorithms/{algorithm_id}"] == ("metadata.workspace_id",)
    assert fields["POST /v1/{project_id}/notebooks"] == ("workspace_id",)
    assert fields["PUT /v1/{project_id}/services/{service_id}"] == ("workspace_id",)
    # The SDK's rows, from its request models:
    assert fields["POST /v2/{project_id}/services"] == ("workspace_id",)
    assert fields["POST /v2/{project_id}/training-experiments"] == ("metadata.workspace_id",)
    assert fields["POST /v2/{project_id}/pools"] == ('metadata.labels."os.modelarts/workspace.id"',)
    assert fields["POST /v1/{project_id}/networks"] == ('metadata.labels."os.modelarts/workspace.id"',)
    assert all(route.method in {"POST", "PUT"} for route in PRESET.routes if route.workspace_fields)


def test_the_packaged_copy_matches_the_research_table() -> None:
    from importlib.resources import files

    lines = files("authmw.data").joinpath("modelarts_routes.tsv").read_text().splitlines()
    assert lines[0].startswith("#")
    assert lines[1] == "method\tpath\taction\talso_required\tresource\tworkspace_fields\tinferred"
    packaged = [tuple([*line.split("\t"), ""][:4]) for line in lines[2:]]
    research = [(row["method"], row["path"], row["action"], row["also_required_or_related"]) for row in ROWS]
    assert packaged[: len(research)] == research
    assert all(row[6] == "" for row in packaged_rows()[: len(research)])  # documented: none is inferred


def test_the_sdk_rows_are_new_routes_with_documented_or_inferred_actions() -> None:
    # A row is inferred when no documentation names its route's action (the generator derived it), even where
    # the derived action is a documented one; the inferred actions are those only inferred rows carry.
    documented = {row["action"] for row in ROWS}
    named = {(m, p) for m, p, _a, _al, _r, _f, inferred in SDK_ROWS if inferred == ""}
    assert len(SDK_ROWS) > 200
    for method, path, _action, also, _resource, _fields, inferred in SDK_ROWS:
        assert method in {"GET", "POST", "PUT", "PATCH", "DELETE"} and path.startswith("/v")
        assert also == "" and inferred in {"", "inferred"}
    assert ("POST", "/v1/{project_id}/networks") in named  # api-modelarts/CreateNetwork names its action
    assert ("POST", "/v2/{project_id}/workflows/{workflow_id}/subscriptions") not in named  # workflow:update, derived
    assert {"modelarts:devserver:reboot", "modelarts:network:update"} <= modelarts_inferred_actions()
    assert "modelarts:workflow:update" not in modelarts_inferred_actions()  # documented for another route
    assert not modelarts_inferred_actions() & documented


def test_the_preset_action_catalog() -> None:
    routed = {row["action"] for row in ROUTED} | {row[2] for row in SDK_ROWS}
    assert set(PRESET.actions) == routed
    assert "modelarts:service:action" in PRESET.actions  # through the body action


@pytest.mark.parametrize("row", UNROUTED, ids=[row["action"] for row in UNROUTED])
def test_actions_without_a_route_are_not_catalog_actions(row: dict[str, str]) -> None:
    # The ExeML rows have no route: they are in the policy action list (authmw.policy.modelarts_actions) only,
    # so AuthContext.allowed_actions, computed over RouteCatalog.actions, never lists them.
    from authmw.policy import modelarts_actions

    assert row["action"] not in PRESET.actions
    assert all(route.action != row["action"] for route in PRESET.routes)
    assert row["action"] in modelarts_actions()


def test_unlisted_paths_and_methods_are_unmatched() -> None:
    assert find(PRESET, "GET", "/v1/p/notebooks/n1/unknown") is None
    assert find(PRESET, "PATCH", "/v1/p/notebooks") is None
    assert find(PRESET, "GET", "/v3/p/notebooks") is None
    assert find(PRESET, "GET", "/") is None


# -- typed parameters, URN escaping, workspace fields (issue 12, items 2 and 14) -------------------------------


@pytest.mark.parametrize(
    ("template", "path", "value"),
    [
        ("/r/{id:int}", "/r/42", "42"),
        ("/r/{id:int}", "/r/0042", "42"),
        ("/r/{id:int}", "/r/0", "0"),
        ("/r/{id:int}", "/r/9223372036854775807", "9223372036854775807"),
        ("/r/{id:uuid}", "/r/0F8FAD5B-D9CB-469F-A165-70867728950E", "0f8fad5b-d9cb-469f-a165-70867728950e"),
        ("/r/{id:uuid}", "/r/0f8fad5bd9cb469fa16570867728950e", "0f8fad5b-d9cb-469f-a165-70867728950e"),
        ("/r/{id:str}", "/r/0042", "0042"),
        ("/r/{id}", "/r/0042", "0042"),
    ],
)
def test_typed_parameters_are_canonical(template: str, path: str, value: str) -> None:
    found = find(catalog(Route("GET", template, "svc:r:get", resource="svc:*:*:r:{id}")), "GET", path)
    assert found is not None and found.params == {"id": value} and found.resource() == f"svc:*:*:r:{value}"


@pytest.mark.parametrize(
    ("template", "path"),
    [
        ("/r/{id:int}", "/r/9223372036854775808"),  # past a signed 64-bit id
        ("/r/{id:int}", "/r/1e3"),
        ("/r/{id:int}", "/r/%EF%BC%94"),  # a full-width digit: int() would take it
        ("/r/{id:int}", "/r/%201"),
        ("/r/{id:uuid}", "/r/%7B0f8fad5b-d9cb-469f-a165-70867728950e%7D"),  # uuid.UUID() takes braces
        ("/r/{id:uuid}", "/r/urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e"),
        ("/r/{id:uuid}", "/r/0x0000000000000000000000000000ab"),  # ... and a 0x prefix
        ("/r/{id:uuid}", "/r/0f8fad5b-d9cb469f-a165-70867728950e"),  # hyphens in some places only
    ],
)
def test_typed_parameters_refuse_other_spellings(template: str, path: str) -> None:
    with pytest.raises(InvalidPathParameter):
        find(catalog(Route("GET", template, "svc:r:get")), "GET", path)


@pytest.mark.parametrize("template", ["/r/{id:float}", "/r/{id:int+}", "/r/{id:}"])
def test_unknown_parameter_types_are_configuration_errors(template: str) -> None:
    with pytest.raises(ConfigurationError):
        catalog(Route("GET", template, "svc:r:get"))


@pytest.mark.parametrize(
    ("path", "urn"),
    [
        ("/b/a%3Ab/k", "s:*:*:o:a%3Ab/k"),  # ':' would shift the URN's segments
        ("/b/%2A/k", "s:*:*:o:%2A/k"),  # '*' and '?' would be wildcards wherever the URN is a pattern
        ("/b/b%3F/k", "s:*:*:o:b%3F/k"),
        ("/b/50%25/k", "s:*:*:o:50%25/k"),  # the escape itself is escaped: no two values share a URN
        ("/b/x%2Fy/k", "s:*:*:o:x%2Fy/k"),  # a '/' inside one segment is not a path separator
        ("/b/b/dir/f:1*", "s:*:*:o:b/dir/f%3A1%2A"),  # in {key+} the '/' separates, the rest is escaped
    ],
)
def test_parameters_are_escaped_in_urns(path: str, urn: str) -> None:
    route = Route("GET", "/b/{bucket}/{key+}", "s:o:get", resource="s:*:*:o:{bucket}/{key}", path_allow=ALL_ALLOW)
    found = find(catalog(route), "GET", path)
    assert found is not None and found.resource() == urn


ALL_ALLOW = frozenset({"encoded-slash"})


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        ("workspace_id", ("workspace_id",)),
        ("metadata.workspace_id", ("metadata", "workspace_id")),
        ('metadata.labels."os.modelarts/workspace.id"', ("metadata", "labels", "os.modelarts/workspace.id")),
    ],
)
def test_json_paths(text: str, keys: tuple[str, ...]) -> None:
    assert json_path(text) == keys


@pytest.mark.parametrize("text", ["", ".a", "a.", "a..b", 'a."b', '"a"b', 'a."".b'])
def test_bad_json_paths(text: str) -> None:
    with pytest.raises(ValueError, match="JSON path"):
        json_path(text)
    with pytest.raises(ConfigurationError, match="workspace_fields"):
        catalog(Route("POST", "/x", "svc:x:create", workspace_fields=(text,)))


def test_workspace_fields_from_configuration() -> None:
    route = route_from_mapping(
        {"method": "POST", "path": "/jobs", "action": "svc:job:create", "workspace_fields": ["metadata.workspace_id"]},
        origin="o",
    )
    assert route.workspace_fields == ("metadata.workspace_id",)
    for bad in ("metadata.workspace_id", [1], {"a": "b"}):
        with pytest.raises(ConfigurationError, match="workspace_fields"):
            route_from_mapping({"path": "/x", "action": "svc:x:get", "workspace_fields": bad}, origin="o")
    routes = Routes()
    routes.protect("POST", "/jobs", "svc:job:create", workspace_fields=["spec.space"])
    assert next(iter(routes)).workspace_fields == ("spec.space",)
