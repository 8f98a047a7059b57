"""Block documents named in Prefect 3 job variables: found at any depth, put in place."""

from __future__ import annotations

import pytest

from actors.rules.block_references import references, resolve
from actors.rules.infrastructure import SubmissionError

CREDENTIALS = {"username": "u", "password": "p", "registry_url": "r:5000"}


def test_a_reference_at_any_depth_is_replaced_by_its_documents_data() -> None:
    variables = {
        "image": "r:5000/flow:1",
        "registry_credentials": {"$ref": {"block_document_id": "b-1"}},
        "env": {"A": "1"},
        "volumes": [{"$ref": {"block_document_id": "b-2"}}],
    }
    assert references(variables) == {"b-1", "b-2"}
    resolved = resolve(variables, {"b-1": CREDENTIALS, "b-2": {"x": 1}})
    assert resolved["registry_credentials"] == CREDENTIALS
    assert resolved["volumes"] == [{"x": 1}]
    assert resolved["env"] == {"A": "1"}
    assert variables["registry_credentials"] == {"$ref": {"block_document_id": "b-1"}}


def test_no_reference_no_change() -> None:
    variables = {"image": "busybox", "labels": {"$refx": 1}}
    assert references(variables) == set()
    assert resolve(variables, {}) == variables


def test_a_schema_reference_is_not_a_block() -> None:
    assert references({"allOf": [{"$ref": "#/definitions/DockerRegistryCredentials"}]}) == set()


def test_a_malformed_reference_says_how_to_write_it() -> None:
    with pytest.raises(SubmissionError, match="block_document_id"):
        references({"registry_credentials": {"$ref": {"id": "b-1"}}})
