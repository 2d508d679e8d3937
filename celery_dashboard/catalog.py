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
            # The sentences the browser shows for a field, so both ends say the same thing.
            "messages": {"required": REQUIRED,
                         "params": {key: sentence(spec) for key, spec in self.params.get("properties", {}).items()}},
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
    """Check `params` against the entry's schema; return them with defaults filled, and the errors.

    Each error is {"field": param name (or "params" for the whole object), "param": the same,
    "label": the field's title as the form shows it, "message": a plain sentence}; one per field.
    """
    if params is None:
        params = {}
    validator = _validator(entry)
    errors: dict[str, dict[str, str]] = {}
    for error in sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path)):
        for field in _fields(error):
            errors.setdefault(field, _error(entry, field, error.validator))
    if errors:
        return {}, list(errors.values())
    properties = entry.params.get("properties", {})
    # JSON Schema counts 3.0 as an integer and Python's JSON reads NaN: the task gets neither.
    bad = [_error(entry, key, "type") for key, value in params.items()
           if isinstance(value, float) and not math.isfinite(value)]
    if bad:
        return {}, bad
    filled = {key: spec["default"] for key, spec in properties.items() if "default" in spec}
    for key, value in params.items():
        integer = properties.get(key, {}).get("type") == "integer"
        filled[key] = int(value) if integer and isinstance(value, float) else value
    return filled, []


def summary(errors: list[dict[str, str]]) -> str:
    """One sentence for a 422 naming every field by its label: "Steps: Enter a whole number from 1 to 1000."."""
    return "; ".join(f"{error['label']}: {error['message']}" for error in errors) + "."


REQUIRED = "This field is required"
NOT_AN_OBJECT = "The parameters must be a JSON object of names and values"


def sentence(spec: dict[str, Any]) -> str:
    """What a field accepts, as a plain instruction: "Enter a whole number from 1 to 100"."""
    kind = spec.get("type")
    if "enum" in spec:
        return "Choose one of " + ", ".join(_plain(v) for v in spec["enum"])
    if kind in ("integer", "number"):
        what = "a whole number" if kind == "integer" else "a number"
        low, high = spec.get("minimum"), spec.get("maximum")
        if low is not None and high is not None:
            return f"Enter {what} from {_plain(low)} to {_plain(high)}"
        if low is not None:
            return f"Enter {what} of at least {_plain(low)}"
        if high is not None:
            return f"Enter {what} of at most {_plain(high)}"
        return f"Enter {what}"
    if kind == "string":
        low, high = spec.get("minLength", 0), spec.get("maxLength")
        if high is not None:
            return f"Enter from {low} to {high} characters" if low else f"Enter at most {high} characters"
        return f"Enter at least {low} characters" if low else "Enter some text"
    if kind == "boolean":
        return "Choose yes or no"
    return "Enter a valid value"


def _plain(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _error(entry: Entry, field: str, validator: str) -> dict[str, str]:
    """The error of one field: its label (the schema's title) and a sentence."""
    if field == "params":
        return {"field": field, "param": field, "label": "Parameters", "message": NOT_AN_OBJECT}
    spec = entry.params.get("properties", {}).get(field)
    if spec is None:
        return {"field": field, "param": field, "label": field,
                "message": f"This task has no parameter named \u201c{field}\u201d"}
    if validator == "required":
        message = REQUIRED
    elif validator == "type" and spec.get("type") == "string":  # a list or a number where text goes
        high = spec.get("maxLength")
        message = "Enter text" + (f" of at most {high} characters" if high is not None else "")
    else:
        message = sentence(spec)
    return {"field": field, "param": field, "label": spec.get("title", field), "message": message}


_validators: dict[str, Draft202012Validator] = {}


def _validator(entry: Entry) -> Draft202012Validator:
    """Building a validator costs more than using it: one per catalog entry."""
    validator = _validators.get(entry.name)
    if validator is None:
        validator = _validators[entry.name] = Draft202012Validator(entry.params)
    return validator


def _fields(error: Any) -> list[str]:
    """The parameters an error is about: the path's first name, the extra names, or "params"."""
    path = [str(part) for part in error.absolute_path]
    if path:
        return [path[0]]
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        return sorted(set(error.instance) - set(error.schema.get("properties", {}))) or ["params"]
    if error.validator == "required" and isinstance(error.instance, dict):
        return [name for name in error.validator_value if name not in error.instance] or ["params"]
    return ["params"]
