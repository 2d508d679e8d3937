from __future__ import annotations

import pytest

import tasks.demo  # noqa: F401 - fills the catalog
from celery_dashboard.catalog import CATALOG, Entry, schema, summary, validate

DEMOS = {"steps", "primes", "fail", "flaky", "long", "fanout"}


def test_catalog_lists_the_demo_tasks_under_their_module_paths() -> None:
    assert DEMOS <= set(CATALOG)
    for name, entry in CATALOG.items():
        assert entry.task.name.startswith("tasks."), name
        assert entry.title and entry.description


@pytest.mark.parametrize("name", sorted(DEMOS))
def test_every_parameter_is_bounded_and_defaulted(name: str) -> None:
    schema = CATALOG[name].params
    assert schema["additionalProperties"] is False
    for field, spec in schema["properties"].items():
        assert "default" in spec, field
        if spec["type"] in ("integer", "number"):
            assert "minimum" in spec and "maximum" in spec, field
        if spec["type"] == "string":
            assert "maxLength" in spec, field


def test_defaults_fill_missing_parameters() -> None:
    params, errors = validate(CATALOG["steps"], {"steps": 3})
    assert errors == []
    assert params == {"steps": 3, "delay": 0.5}


def test_no_params_means_all_defaults() -> None:
    params, errors = validate(CATALOG["steps"], None)
    assert errors == [] and params == {"steps": 10, "delay": 0.5}


def test_errors_name_the_offending_fields() -> None:
    _, errors = validate(CATALOG["steps"], {"steps": 0, "delay": "slow"})
    assert {e["field"] for e in errors} == {"steps", "delay"}
    assert all(e["message"] for e in errors)


def test_unknown_parameters_are_rejected_by_name() -> None:
    _, errors = validate(CATALOG["steps"], {"steps": 2, "rm_rf": True})
    assert errors == [{"field": "rm_rf", "param": "rm_rf", "label": "rm_rf",
                       "message": "This task has no parameter named \u201crm_rf\u201d"}]


def test_params_must_be_an_object() -> None:
    _, errors = validate(CATALOG["steps"], [1, 2])
    assert errors[0]["field"] == "params"


def test_string_length_is_bounded() -> None:
    _, errors = validate(CATALOG["fail"], {"message": "x" * 201})
    assert errors[0]["field"] == "message"


def test_nan_is_refused_and_an_integral_float_becomes_an_integer() -> None:
    entry = CATALOG["steps"]
    _, errors = validate(entry, {"delay": float("nan")})
    assert errors == [{"field": "delay", "param": "delay", "label": "Seconds per step",
                       "message": "Enter a number from 0 to 10"}]
    params, errors = validate(entry, {"steps": 3.0})
    assert not errors and params["steps"] == 3 and isinstance(params["steps"], int)


def test_errors_are_plain_sentences_that_name_the_field_by_its_label() -> None:
    _, errors = validate(CATALOG["fail"], {"steps": 101, "delay": "slow", "message": "x" * 201})
    assert errors == [
        {"field": "delay", "param": "delay", "label": "Seconds per step", "message": "Enter a number from 0 to 10"},
        {"field": "message", "param": "message", "label": "Error message", "message": "Enter at most 200 characters"},
        {"field": "steps", "param": "steps", "label": "Steps before failing",
         "message": "Enter a whole number from 0 to 100"},
    ]
    assert summary(errors[:1]) == "Seconds per step: Enter a number from 0 to 10."


def test_one_error_per_field_and_a_fraction_is_not_a_whole_number() -> None:
    _, errors = validate(CATALOG["steps"], {"steps": 3.5})
    assert [(e["label"], e["message"]) for e in errors] == [("Steps", "Enter a whole number from 1 to 1000")]


def test_a_required_parameter_says_so() -> None:
    entry = Entry("needs", "Needs", "d", {**schema(n={"type": "integer", "title": "N"}), "required": ["n"]},
                  CATALOG["steps"].task)
    _, errors = validate(entry, {})
    assert errors == [{"field": "n", "param": "n", "label": "N", "message": "This field is required"}]


def test_the_catalog_serves_the_same_sentences_the_server_answers_with() -> None:
    public = CATALOG["primes"].public()
    assert public["messages"] == {"required": "This field is required",
                                  "params": {"limit": "Enter a whole number from 2 to 5000000"}}
    _, errors = validate(CATALOG["primes"], {"limit": 1})
    assert errors[0]["message"] == public["messages"]["params"]["limit"]
