"""The spec's reference page (docs/reference/spec.md), generated from the pydantic JSON Schema so
that it cannot drift from what `slimline validate` accepts."""

from __future__ import annotations

import json
from typing import Any

from slimline.pipelines.spec.spec import Spec, schema_object

PIPE = "\\|"  # a literal | inside a Markdown table cell


def _type(node: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in node:
        return defs[node["$ref"].rsplit("/", 1)[1]].get("title", "object")
    if "enum" in node:
        return " \\| ".join(json.dumps(v) for v in node["enum"])
    if "const" in node:
        return json.dumps(node["const"])
    for key in ("anyOf", "oneOf"):
        if key in node:
            return " \\| ".join(_type(n, defs) for n in node[key])
    kind = node.get("type", "any")
    if kind == "array":
        return f"list of {_type(node.get('items', {}), defs)}"
    if kind == "object" and "additionalProperties" in node and isinstance(node["additionalProperties"], dict):
        return f"map of {_type(node['additionalProperties'], defs)}"
    return str(kind)


def _rows(schema: dict[str, Any], defs: dict[str, Any], prefix: str, seen: set[str]) -> list[str]:
    out = []
    required = set(schema.get("required", []))
    for name, node in schema.get("properties", {}).items():
        path = f"{prefix}{name}"
        child = schema_object(node, defs)
        default = (
            "required" if name in required else json.dumps(node.get("default")) if "default" in node else ""
        )
        if child is not None and default != "required":
            default = "its fields' defaults"  # listed in the rows below
        meaning = node.get("description") or (child or {}).get("description") or ""
        cells = [f"`{path}`", _type(node, defs), default, " ".join(str(meaning).split())]
        out.append(
            "| " + " | ".join(c.replace("|", PIPE) if i > 1 else c for i, c in enumerate(cells)) + " |"
        )
        if child is not None and child.get("title") not in seen:
            out += _rows(child, defs, f"{path}.", seen | {str(child.get("title"))})
    return out


def spec_markdown() -> str:
    """Every field of a version-1 spec, nested fields by their dotted path."""
    schema = Spec.model_json_schema()
    defs = schema.get("$defs", {})
    head = ["| field | type | default | meaning |", "|---|---|---|---|"]
    return "\n".join(head + _rows(schema, defs, "", {str(schema.get("title"))}))
