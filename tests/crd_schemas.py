"""Offline, strict validation of rendered custom resources against shipped CRD schemas.

The schemas live in ``deploy/schemas/<group>/<kind>-<version>.json`` (see its
README for provenance and regeneration). They are strict the way
``kubectl --validate=strict`` is: a field the CRD does not declare is an error.
Built-in kinds (Deployment, Service, ...) have no schema here; use
:func:`has_schema` to pick the custom resources out of a rendered manifest.

Example::

    for doc in yaml.safe_load_all(rendered):
        if has_schema(doc["apiVersion"], doc["kind"]):
            assert validate_custom(doc) == []
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

SCHEMA_ROOT = Path(__file__).resolve().parents[1] / "deploy" / "schemas"

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_MAX_MESSAGE = 300


class UnknownCustomResourceError(KeyError):
    """No shipped schema matches a document's ``apiVersion`` and ``kind``."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@cache
def _index() -> dict[tuple[str, str], Path]:
    """Map ``(apiVersion, kind)`` to its schema file, read from the schemas' consts.

    Returns:
        One entry per shipped schema file.
    """
    index: dict[tuple[str, str], Path] = {}
    for path in sorted(SCHEMA_ROOT.glob("*/*.json")):
        schema = json.loads(path.read_text(encoding="utf-8"))
        props = schema["properties"]
        index[(props["apiVersion"]["const"], props["kind"]["const"])] = path
    return index


def known_kinds() -> list[tuple[str, str]]:
    """List the custom resources that have a schema.

    Returns:
        Sorted ``(apiVersion, kind)`` pairs.
    """
    return sorted(_index())


def has_schema(api_version: str, kind: str) -> bool:
    """Tell whether a shipped schema covers this custom resource.

    Args:
        api_version: The object's ``apiVersion``, e.g. ``keda.sh/v1alpha1``.
        kind: The object's ``kind``, e.g. ``ScaledObject`` (case-sensitive).

    Returns:
        True when :func:`validate_custom` can validate such an object.
    """
    return (api_version, kind) in _index()


@cache
def _validator(api_version: str, kind: str) -> Draft202012Validator:
    """Build (once) the validator for one custom resource.

    Args:
        api_version: The object's ``apiVersion``.
        kind: The object's ``kind``.

    Returns:
        A draft 2020-12 validator over the shipped schema.

    Raises:
        UnknownCustomResourceError: When no schema is shipped for the pair.
    """
    path = _index().get((api_version, kind))
    if path is None:
        known = ", ".join(f"{k} {v}" for v, k in known_kinds())
        raise UnknownCustomResourceError(
            f"no CRD schema for kind {kind!r} apiVersion {api_version!r} in "
            f"{SCHEMA_ROOT}; known: {known}"
        )
    schema = json.loads(path.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _field_path(parts: Iterable[str | int]) -> str:
    """Render a JSON path kubectl-style: ``spec.triggers[0].metadata``.

    Args:
        parts: Keys and list indices from the document root.

    Returns:
        The dotted path; keys that are not plain names are bracketed and quoted.
    """
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out


def _messages(error: ValidationError) -> Iterator[str]:
    """Turn one jsonschema error into messages that name the offending field.

    Args:
        error: A validation error.

    Yields:
        One message per offending field.
    """
    parts = list(error.absolute_path)
    instance = error.instance
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        declared = schema.get("properties", {})
        for name in sorted(k for k in instance if k not in declared):
            yield f'unknown field "{_field_path([*parts, name])}"'
    elif error.validator == "required" and isinstance(instance, dict):
        for name in schema.get("required", []):
            if name not in instance:
                yield f'missing required field "{_field_path([*parts, name])}"'
    else:
        where = _field_path(parts) or "(root)"
        message = error.message
        if len(message) > _MAX_MESSAGE:
            message = message[:_MAX_MESSAGE] + "..."
        yield f"{where}: {message}"


def validate_custom(doc: dict[str, Any]) -> list[str]:
    """Validate one rendered custom resource against its shipped CRD schema.

    The schema is chosen by ``apiVersion`` and ``kind``. Unknown fields, wrong
    types, values outside an ``enum`` and missing required fields are reported;
    ``metadata`` is only checked to be an object.

    Args:
        doc: One parsed manifest document.

    Returns:
        Human-readable errors, each prefixed with ``Kind apiVersion "name"`` and
        naming the offending field; empty when the object is valid.

    Raises:
        UnknownCustomResourceError: A ``KeyError`` when no schema is shipped for
            the document's ``apiVersion``/``kind`` (see :func:`has_schema`).
    """
    api_version = doc.get("apiVersion")
    kind = doc.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        raise UnknownCustomResourceError(
            f"document has no string apiVersion/kind (got {api_version!r}, {kind!r})"
        )
    validator = _validator(api_version, kind)
    metadata = doc.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    label = f'{kind} {api_version} "{name or "<unnamed>"}"'
    errors = sorted(
        validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path]
    )
    return [f"{label}: {message}" for error in errors for message in _messages(error)]
