"""The catalog of launchable tasks: short names, titles and JSON Schemas for their parameters."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import Task
from jsonschema import Draft202012Validator


@dataclass(frozen=True)
class Entry:
    """One launchable task as the dashboard lists it."""

    name: str
    title: str
    description: str
    params: dict[str, Any]
    task: Task

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "task": self.task.name,
            "params": self.params,
        }


CATALOG: dict[str, Entry] = {}


def schema(**properties: dict[str, Any]) -> dict[str, Any]:
    """A parameters schema: an object with exactly these properties, none required (all defaulted)."""
    return {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }


def launchable(name: str, title: str, description: str, params: dict[str, Any]) -> Callable[[Task], Task]:
    """Add a Celery task to the catalog under `name`; apply it below `@celery_app.task`."""
    Draft202012Validator.check_schema(params)

    def register(task: Task) -> Task:
        if name in CATALOG:
            raise ValueError(f"catalog name {name!r} is taken")
        CATALOG[name] = Entry(name, title, description, params, task)
        return task

    return register


def validate(entry: Entry, params: Any) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Check `params` against the entry's schema; return them with defaults filled, and the errors."""
    if params is None:
        params = {}
    validator = _validator(entry)
    errors = [
        {"field": _field(error), "message": error.message}
        for error in sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
    ]
    if errors:
        return {}, errors
    properties = entry.params.get("properties", {})
    # JSON Schema counts 3.0 as an integer and Python's JSON reads NaN: the task gets neither.
    bad = [{"field": key, "message": "must be a finite number"} for key, value in params.items()
           if isinstance(value, float) and not math.isfinite(value)]
    if bad:
        return {}, bad
    filled = {key: spec["default"] for key, spec in properties.items() if "default" in spec}
    for key, value in params.items():
        integer = properties.get(key, {}).get("type") == "integer"
        filled[key] = int(value) if integer and isinstance(value, float) else value
    return filled, []


_validators: dict[str, Draft202012Validator] = {}


def _validator(entry: Entry) -> Draft202012Validator:
    """Building a validator costs more than using it: one per catalog entry."""
    validator = _validators.get(entry.name)
    if validator is None:
        validator = _validators[entry.name] = Draft202012Validator(entry.params)
    return validator


def _field(error: Any) -> str:
    path = ".".join(str(part) for part in error.absolute_path)
    if error.validator == "additionalProperties" and not path:
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return ".".join(extra) or "params"
    return path or "params"
