"""Block documents named inside Prefect 3 job variables, replaced by their data.

A Prefect 3 user who gives a docker pool its registry's credentials does not paste a password
into the job variables: they name a block document, `{"$ref": {"block_document_id": ID}}` (what
the UI and `prefect deploy` store), in the pool's template defaults, the deployment's job
variables or the run's. Prefect's workers replace each such reference by the block's data
before they use the variables (`resolve_block_document_references`); so does this agent, for
the variables of a run, before its kind reads them.

Pure: `references` lists the ids a value names; `resolve` puts the documents' data in their
place, given the documents already read (the edge reads them, `actors.edges.run_infrastructure`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from actors.rules.infrastructure import SubmissionError


def _reference(value: object) -> str | None:
    """The block document id of a `{"$ref": {"block_document_id": ID}}`, else None."""
    if not isinstance(value, dict) or set(value) != {"$ref"}:
        return None
    target = value["$ref"]
    if isinstance(target, dict) and isinstance(target.get("block_document_id"), str):
        return str(target["block_document_id"])
    if isinstance(target, str) and target.startswith("#"):
        return None  # a JSON-schema reference ("#/definitions/..."), not a block
    raise SubmissionError(
        f"a job variable names a block document as {value!r}; write it as "
        '{"$ref": {"block_document_id": "<id>"}}'
    )


def references(value: object) -> set[str]:
    """Every block document id `value` names, at any depth."""
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        ref = _reference(item)
        if ref is not None:
            found.add(ref)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def resolve(value: Any, documents: Mapping[str, Mapping[str, Any]]) -> Any:
    """`value` with each reference replaced by its document's data (a copy; `value` is kept)."""
    ref = _reference(value)
    if ref is not None:
        if ref not in documents:
            raise SubmissionError(f"job variables name block document {ref}, which was not read")
        return dict(documents[ref])
    if isinstance(value, dict):
        return {key: resolve(item, documents) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, documents) for item in value]
    return value
