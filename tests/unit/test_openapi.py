"""The OpenAPI description is served and describes every API route the app has."""
from __future__ import annotations

import json
import re
from typing import Any

import jsonschema

from web.api import OPENAPI


def described() -> dict[str, Any]:
    return json.loads(OPENAPI.read_text())


def test_it_is_served_as_json(client: Any) -> None:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.get_json() == described()
    assert described()["openapi"].startswith("3.1")


def test_every_api_route_and_method_is_described(app: Any) -> None:
    paths = described()["paths"]
    routes = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api") and rule.rule != "/metrics":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes.add((path, method.lower()))
    documented = {(path, method) for path, ops in paths.items() for method in ops if method != "parameters"}
    assert routes == documented


def test_api_answers_match_the_described_schemas(client: Any) -> None:
    spec = described()
    components = spec["components"]["schemas"]

    def check(body: Any, name: str) -> None:
        schema = {"$ref": f"#/components/schemas/{name}", "components": {"schemas": components}}
        jsonschema.validate(body, schema, cls=jsonschema.Draft202012Validator)

    task = client.post("/api/tasks", json={"task": "steps"}).get_json()
    check(task, "Task")
    check(client.get(f"/api/tasks/{task['id']}").get_json(), "Task")
    for entry in client.get("/api/catalog").get_json()["tasks"]:
        check(entry, "CatalogEntry")
    check(client.get("/api/tasks/nope").get_json(), "Error")
    check(client.post("/api/tasks", json={"task": "steps", "params": {"steps": -1}}).get_json(), "Error")
