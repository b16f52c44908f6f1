"""Convert a CustomResourceDefinition's OpenAPI v3 schema into strict JSON Schema.

The output is what ``tests/crd_schemas.py`` loads to validate rendered custom
resources offline, with ``kubectl --validate=strict`` semantics: a field the CRD
does not declare is an error, not silently pruned.

Rules, applied to every schema node of each chosen CRD version:

* an object schema with ``properties``, no ``additionalProperties`` and no
  ``x-kubernetes-preserve-unknown-fields: true`` gets ``additionalProperties: false``;
* ``x-kubernetes-int-or-string: true`` becomes ``anyOf: [integer, string]``
  (controller-gen already emits that ``anyOf``; it is added where missing);
* ``x-kubernetes-list-type: set`` becomes ``uniqueItems: true``;
* OpenAPI ``nullable: true`` adds ``null`` to the type;
* a ``pattern`` Python's ``re`` rejects (RE2's ``^(?i)...``) has its inline flag
  group hoisted to the front (see :func:`python_pattern`);
* ``description`` and the remaining ``x-kubernetes-*`` annotations are dropped
  (``x-kubernetes-preserve-unknown-fields`` is kept, as a note to readers);
  ``type``, ``required``, ``enum``, ``format``, ``pattern``, bounds and
  ``default`` are kept as they are;
* the root allows ``apiVersion`` (``const`` group/version), ``kind`` (``const``)
  and ``metadata`` (any object), and requires ``apiVersion`` and ``kind``.

Usage::

    python scripts/crd_to_schema.py CRD.yaml [--out-dir deploy/schemas]
        [--version v1beta2 ...] [--source "owner/repo@commit:path"]

Each chosen served version is written to
``<out-dir>/<group>/<kind lowercased>-<version>.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf")
_SUBSCHEMA_SINGLE = ("items", "not")
_DROPPED = frozenset({"description", "nullable"})
_KEPT_EXTENSIONS = frozenset({"x-kubernetes-preserve-unknown-fields"})
_INT_OR_STRING = [{"type": "integer"}, {"type": "string"}]
_ANCHORED_FLAGS = re.compile(r"^\^(\(\?[a-zA-Z]+\))")


def python_pattern(pattern: str) -> str:
    """Make a CRD ``pattern`` (Go RE2 syntax) compile under Python's ``re``.

    RE2 accepts an inline flag group after the anchor (``^(?i)(abort|warn)?$``,
    prometheus-operator's PrometheusRule); Python 3.11 requires global flags
    first, so the group is hoisted in front of the ``^``, which means the same.

    Args:
        pattern: The upstream regular expression.

    Returns:
        The pattern unchanged when Python compiles it, else the hoisted form.

    Raises:
        ValueError: When neither form compiles under Python's ``re``.
    """
    candidates = [pattern, _ANCHORED_FLAGS.sub(r"\1^", pattern)]
    for candidate in candidates:
        try:
            re.compile(candidate)
        except re.error:
            continue
        return candidate
    raise ValueError(f"pattern {pattern!r} does not compile under Python's re")


def _is_dropped(key: str) -> bool:
    """Whether a schema keyword is left out of the output.

    Args:
        key: A keyword of an OpenAPI v3 schema node.

    Returns:
        True for ``description``, ``nullable`` (folded into ``type``) and the
        ``x-kubernetes-*`` annotations other than preserve-unknown-fields.
    """
    if key in _DROPPED:
        return True
    return key.startswith("x-kubernetes-") and key not in _KEPT_EXTENSIONS


def _convert_value(key: str, value: Any) -> Any:
    """Convert one keyword's value, recursing into the keywords that hold schemas.

    Args:
        key: The keyword.
        value: Its value in the CRD.

    Returns:
        The converted value.
    """
    if key == "properties":
        return {name: convert_node(sub) for name, sub in value.items()}
    if key == "pattern" and isinstance(value, str):
        return python_pattern(value)
    if key in _SUBSCHEMA_LISTS:
        return [convert_node(sub) for sub in value]
    if key in (*_SUBSCHEMA_SINGLE, "additionalProperties") and isinstance(value, dict):
        return convert_node(value)
    return value


def _apply_kubernetes_extensions(node: dict[str, Any], out: dict[str, Any]) -> None:
    """Translate the Kubernetes keywords that change what validates.

    Args:
        node: The CRD's schema node.
        out: The converted node, modified in place.
    """
    if node.get("x-kubernetes-int-or-string") is True:
        out.pop("type", None)
        out.setdefault("anyOf", [dict(s) for s in _INT_OR_STRING])
    if node.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    if node.get("nullable") is True:
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        if isinstance(out.get("enum"), list) and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        if "anyOf" in out:
            out["anyOf"] = [*out["anyOf"], {"type": "null"}]


def convert_node(node: dict[str, Any]) -> dict[str, Any]:
    """Convert one OpenAPI v3 schema node (and its subschemas) to strict JSON Schema.

    Args:
        node: A structural schema node from a CRD's ``openAPIV3Schema``.

    Returns:
        A new JSON Schema node; ``node`` is not modified.
    """
    out = {
        key: _convert_value(key, value)
        for key, value in node.items()
        if not _is_dropped(key)
    }
    _apply_kubernetes_extensions(node, out)
    if (
        "properties" in node
        and "additionalProperties" not in node
        and node.get("x-kubernetes-preserve-unknown-fields") is not True
    ):
        out["additionalProperties"] = False
    return out


def version_schema(
    group: str, kind: str, version: str, openapi: dict[str, Any], source: str | None
) -> dict[str, Any]:
    """Build the JSON Schema document for one version of a CRD.

    Args:
        group: The CRD's API group, e.g. ``keda.sh``.
        kind: The resource kind, e.g. ``ScaledObject``.
        version: The version name, e.g. ``v1alpha1``.
        openapi: That version's ``schema.openAPIV3Schema``.
        source: Provenance recorded in ``$comment``, or None.

    Returns:
        A JSON Schema (draft 2020-12) for the whole object.
    """
    body = convert_node(openapi)
    properties: dict[str, Any] = dict(body.get("properties", {}))
    properties["apiVersion"] = {"type": "string", "const": f"{group}/{version}"}
    properties["kind"] = {"type": "string", "const": kind}
    properties["metadata"] = {"type": "object"}
    body["properties"] = properties
    body["additionalProperties"] = False
    body["required"] = sorted({"apiVersion", "kind", *body.get("required", [])})
    header: dict[str, Any] = {"$schema": JSON_SCHEMA_DIALECT}
    comment = f"{kind} {group}/{version}, generated by scripts/crd_to_schema.py"
    header["$comment"] = f"{comment} from {source}" if source else comment
    return {**header, **body}


def _load_crd(path: Path) -> dict[str, Any]:
    """Read the first CustomResourceDefinition in a YAML file.

    Args:
        path: A YAML file holding one or more documents.

    Returns:
        The CRD document.

    Raises:
        ValueError: When the file holds no CustomResourceDefinition.
    """
    with path.open(encoding="utf-8") as handle:
        for doc in yaml.safe_load_all(handle):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                return doc
    raise ValueError(f"{path}: no CustomResourceDefinition found")


def convert_crd(
    crd_path: Path,
    out_dir: Path,
    versions: Sequence[str] = (),
    source: str | None = None,
) -> list[Path]:
    """Write one strict JSON Schema file per chosen served version of a CRD.

    Args:
        crd_path: The upstream CRD YAML.
        out_dir: Root of the schema tree (``deploy/schemas``).
        versions: Version names to write; empty means every served version.
        source: Provenance for ``$comment`` (``owner/repo@commit:path``).

    Returns:
        The files written.

    Raises:
        ValueError: When a requested version is not served by the CRD.
    """
    crd = _load_crd(crd_path)
    spec = crd["spec"]
    group: str = spec["group"]
    kind: str = spec["names"]["kind"]
    served = {v["name"]: v for v in spec["versions"] if v.get("served", False)}
    missing = [v for v in versions if v not in served]
    if missing:
        raise ValueError(
            f"{crd_path}: {kind} does not serve {missing}; served: {sorted(served)}"
        )
    written: list[Path] = []
    for name in versions or sorted(served):
        schema = version_schema(
            group, kind, name, served[name]["schema"]["openAPIV3Schema"], source
        )
        target = out_dir / group / f"{kind.lower()}-{name}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(
            json.dumps(schema, indent=1, sort_keys=True) + "\n", encoding="utf-8"
        )
        written.append(target)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: Arguments without the program name; None reads ``sys.argv``.

    Returns:
        The process exit status.
    """
    parser = argparse.ArgumentParser(
        description="Convert a CRD's OpenAPI v3 schema into strict JSON Schema."
    )
    parser.add_argument("crd", type=Path, help="upstream CRD YAML file")
    parser.add_argument(
        "--out-dir", type=Path, default=Path("deploy/schemas"), help="schema root"
    )
    parser.add_argument(
        "--version",
        action="append",
        default=[],
        dest="versions",
        help="version to write (repeatable; default: every served version)",
    )
    parser.add_argument("--source", help="provenance, e.g. owner/repo@commit:path")
    args = parser.parse_args(argv)
    for path in convert_crd(args.crd, args.out_dir, args.versions, args.source):
        sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
