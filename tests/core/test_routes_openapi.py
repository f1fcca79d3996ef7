"""Routes read from an OpenAPI document (``x-iam-action`` per operation) and app paths in the route grammar."""

from __future__ import annotations

from typing import Any

import pytest

from authmw.errors import ConfigurationError
from authmw.routes import Access, Route, RouteCatalog, path_template, routes_from_openapi


def document(operation: dict[str, Any], path: str = "/items/{item_id}", **item: Any) -> dict[str, Any]:
    return {"openapi": "3.1.0", "paths": {path: {"get": operation, **item}}}


@pytest.mark.parametrize(
    ("path", "kinds", "template"),
    [
        ("/", {}, "/"),
        ("/items/", {}, "/items"),  # the guard reads a trailing slash away
        ("/items/{id}", {}, "/items/{id}"),
        ("/items/{id:int}/{u:uuid}", {}, "/items/{id:int}/{u:uuid}"),
        ("/items/{id}", {"id": "int"}, "/items/{id:int}"),
        ("/items/{id:str}", {"id": "int"}, "/items/{id}"),  # the convertor wins
        ("/files/{rest:path}", {}, "/files/{rest+}"),
        ("/files/{name}.{ext}", {"name": "int"}, "/files/{name}"),  # mixed: one text segment, the app checks
        ("/x/{f:float}/{c:custom}", {}, "/x/{f}/{c}"),
        ("/items/{item-id}", {"item-id": "uuid"}, "/items/{item_id:uuid}"),
        ("/v/{1st}", {}, "/v/{_1st}"),
    ],
)
def test_app_paths_in_the_route_grammar(path: str, kinds: dict[str, str], template: str) -> None:
    assert path_template(path, kinds, origin="t")[0] == template
    RouteCatalog([Route("GET", template, access=Access.PUBLIC)])  # the catalog takes it


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("items", "the path must start with /"),
        ("/files/{p:path}/raw", r"a \{p:path\} parameter must come last"),
        ("/a//b", "bad path segment ''"),
        ("/a/{b", "bad path segment"),
    ],
)
def test_app_paths_the_grammar_cannot_hold(path: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=f"^t: {message}"):
        path_template(path, origin="t")


def test_operations_name_their_action_access_and_resource() -> None:
    doc = document(
        {"x-iam-action": "svc:item:get", "x-iam-resource": "svc:*:*:item:{item-id}"},
        path="/items/{item-id}",
        parameters=[{"name": "item-id", "in": "path", "schema": {"type": "integer"}}],
        delete={"x-iam-access": "authenticate-only"},
    )
    doc["paths"]["/health"] = {"get": {"x-iam-access": "public"}, "summary": "not an operation"}
    routes = routes_from_openapi(doc, prefix="/api/")
    assert routes == (
        Route("GET", "/api/items/{item_id:int}", "svc:item:get", resource="svc:*:*:item:{item_id}"),
        Route("DELETE", "/api/items/{item_id:int}", access=Access.AUTHENTICATE_ONLY),
        Route("GET", "/api/health", access=Access.PUBLIC),
    )
    match = RouteCatalog(routes).match("GET", ("api", "items", "042"))
    assert match is not None
    assert match.resource() == "svc:*:*:item:42"  # typed: one spelling per item


def test_operation_parameters_override_the_path_items() -> None:
    doc = document(
        {
            "x-iam-action": "svc:item:get",
            "parameters": [{"name": "item_id", "in": "path", "schema": {"type": "string", "format": "uuid"}}],
        },
        parameters=[{"name": "item_id", "in": "path", "schema": {"type": "integer"}}],
    )
    assert routes_from_openapi(doc)[0].template == "/items/{item_id:uuid}"


@pytest.mark.parametrize(
    ("operation", "message"),
    [
        ({}, r"OpenAPI GET /items/\{item_id\}: name the IAM action .* not neither"),
        ({"x-iam-action": "svc:a:b", "x-iam-access": "public"}, "not both"),
        ({"x-iam-access": "everyone"}, "x-iam-access is public or authenticate-only"),
        ({"x-iam-action": ["svc:a:b"]}, "are text"),
        ({"x-iam-access": "public", "x-iam-resource": "svc:*:*:a:{item_id}"}, "x-iam-resource goes with x-iam-action"),
        ("get", "an operation is a mapping"),
    ],
)
def test_an_operation_without_a_clear_access_is_refused(operation: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        routes_from_openapi(document(operation))


def test_a_document_that_is_not_one_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="no paths mapping"):
        routes_from_openapi({"openapi": "3.1.0"})
    with pytest.raises(ConfigurationError, match="TRACE"):
        routes_from_openapi({"paths": {"/x": {"trace": {"x-iam-access": "public"}}}})
    bad_action = routes_from_openapi(document({"x-iam-action": "not-an-action"}))
    with pytest.raises(ConfigurationError, match="is not service:type:operation"):
        RouteCatalog(bad_action)  # the catalog checks the action, as for any configured route
