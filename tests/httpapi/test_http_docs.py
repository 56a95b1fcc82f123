"""The curl examples of the README and docs/http-api.md name operations the served OpenAPI document has, with
the method it gives them, and the operations table of docs/http-api.md lists every route."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.mosquitto

REPO = Path(__file__).resolve().parents[2]
_CURL = re.compile(r"curl (?P<flags>[^$]*)\$URL(?P<path>/[^\s\"']*)")


def _routes(document: dict[str, object]) -> list[tuple[str, re.Pattern[str]]]:
    paths = document["paths"]
    assert isinstance(paths, dict)
    out = []
    for path, operations in paths.items():
        pattern = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$")
        out += [(method.upper(), pattern) for method in operations]
    return out


async def test_every_curl_example_names_a_documented_operation(http: httpx.AsyncClient) -> None:
    routes = _routes((await http.get("/openapi.json")).json())
    examples = []
    for source in (REPO / "README.md", REPO / "docs" / "http-api.md"):
        for found in _CURL.finditer(source.read_text(encoding="utf-8")):
            method = "POST" if "-X POST" in found["flags"] else "GET"
            examples.append((source.name, method, found["path"]))
    assert len(examples) >= 8
    for doc, method, path in examples:
        if path == "/openapi.json":
            continue
        assert (method, True) in {(m, bool(p.match(path))) for m, p in routes}, f"{doc}: {method} {path}"


async def test_the_operations_table_lists_every_route(http: httpx.AsyncClient) -> None:
    document = (await http.get("/openapi.json")).json()
    text = (REPO / "docs" / "http-api.md").read_text(encoding="utf-8")
    for path, operations in document["paths"].items():
        for method in operations:
            if path == "/api/v1/events":
                assert "GET /api/v1/events" in text
                continue
            assert f"`{method.upper()} {path}" in text, f"{method.upper()} {path} is not in docs/http-api.md"
