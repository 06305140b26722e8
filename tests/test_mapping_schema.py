"""schemas/mapping.schema.json: what editors check must agree with the loader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from destination.mapping_file import read_document
from destination.templates import DIRECTIVE_NAMES
from tests.paths import EXAMPLE_MAPPINGS, REPO, SCHEMAS

SCHEMA = json.loads((SCHEMAS / "mapping.schema.json").read_text(encoding="utf-8"))
VALIDATOR = Draft202012Validator(SCHEMA)
GOOD_FILES = [
    *sorted(EXAMPLE_MAPPINGS.glob("*.yaml")),
    REPO / "tests" / "data" / "mappings" / "orders.yaml",
]


def test_schema_is_valid() -> None:
    """The schema is a valid draft 2020-12 schema with the documented id."""
    Draft202012Validator.check_schema(SCHEMA)

    assert SCHEMA["$id"] == "https://destination.invalid/schemas/mapping.schema.json"


@pytest.mark.parametrize("path", GOOD_FILES, ids=[path.name for path in GOOD_FILES])
def test_loadable_files_pass_the_schema(path: Path) -> None:
    """Every mapping file the loader accepts passes the editor schema."""
    errors = list(VALIDATOR.iter_errors(read_document(path).value))

    assert errors == []


def test_every_directive_is_described() -> None:
    """The schema knows every directive the loader knows."""
    described = {
        key
        for definition in SCHEMA["$defs"].values()
        for key in definition.get("properties", {})
        if key.startswith("@")
    }

    assert described == set(DIRECTIVE_NAMES)


def mapping(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": "m",
        "when": {"event": "A"},
        "send": {"message": {"template": "t"}},
    }
    entry.update(changes)
    return {"mappings": [entry]}


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(mapping(sned={}), id="unknown-key"),
        pytest.param(mapping(when={"event": "A", "match": "fuzzy"}), id="match"),
        pytest.param(mapping(profile={"profile": {}}), id="send-and-profile"),
        pytest.param(
            mapping(send={"message": {"template": {"@path": 1}}}), id="path-type"
        ),
        pytest.param(
            mapping(send={"message": {"template": {"@tempalte": "x"}}}),
            id="unknown-directive",
        ),
        pytest.param(
            mapping(send={"message": {"template": {"@case": {"operator": "title"}}}}),
            id="case-operator",
        ),
        pytest.param(
            mapping(when={"all": [{"path": "$.x", "greater_than": "5"}]}),
            id="condition-operand",
        ),
        pytest.param(mapping(examples=[{"event": {}}]), id="example-without-expect"),
        pytest.param(mapping(allow_lists="yes"), id="opt-in-type"),
    ],
)
def test_the_schema_flags_mistakes(document: dict[str, Any]) -> None:
    """Mistakes an editor should underline fail the schema."""
    assert list(VALIDATOR.iter_errors(document))


def test_yaml_front_matter_points_at_the_schema() -> None:
    """Each example names the schema for the YAML language server, by a real path."""
    for path in sorted(EXAMPLE_MAPPINGS.glob("*.yaml")):
        first = path.read_text(encoding="utf-8").splitlines()[0]
        target = first.removeprefix("# yaml-language-server: $schema=")

        assert target != first, path
        assert (path.parent / target).resolve() == SCHEMAS / "mapping.schema.json"
        assert isinstance(yaml.safe_load(path.read_text(encoding="utf-8")), dict)
