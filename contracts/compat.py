"""Compatibility of a new JSON Schema with the previous one, from the side of an existing consumer.

A consumer built on the previous schema must accept every event the new schema allows (it ignores
properties it does not know). So a change is breaking when it lets new data fall outside the old
schema: a required field made optional or removed, a type widened, an enum value added, a bound or
length relaxed, a pattern or format changed. Adding an optional field, tightening a rule, or editing a
description is compatible.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

_WIDENING_BOUNDS = {
    "maxLength": "max",
    "maxItems": "max",
    "maximum": "max",
    "exclusiveMaximum": "max",
    "minLength": "min",
    "minItems": "min",
    "minimum": "min",
    "exclusiveMinimum": "min",
}


def _resolve(schema: Schema, root: Schema) -> Schema:
    while "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/$defs/"):
            raise ValueError(f"unsupported $ref {ref}")
        schema = root["$defs"][ref.split("/")[-1]]
    return schema


def _branches(schema: Schema, root: Schema) -> list[Schema]:
    schema = _resolve(schema, root)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            out: list[Schema] = []
            for branch in schema[key]:
                out.extend(_branches(branch, root))
            return out
    return [schema]


def _types(schema: Schema) -> set[str]:
    t = schema.get("type")
    if t is None:
        return {"any"}
    return set(t) if isinstance(t, list) else {t}


def breaking_changes(old: Schema, new: Schema) -> list[str]:
    """Every way ``new`` admits data that a consumer of ``old`` would reject (empty: compatible)."""
    return _compare(old, new, old, new, "")


def _compare(old: Schema, new: Schema, old_root: Schema, new_root: Schema, path: str) -> list[str]:
    problems: list[str] = []
    old_branches = _branches(old, old_root)
    for nb in _branches(new, new_root):
        candidates: list[list[str]] = [
            _compare_simple(ob, nb, old_root, new_root, path) for ob in old_branches
        ]
        if all(candidates):
            # no old branch accepts this new branch: report against the closest (fewest problems)
            closest: list[str] = min(candidates, key=len)
            problems.extend(closest)
    return problems


def _compare_simple(old: Schema, new: Schema, old_root: Schema, new_root: Schema, path: str) -> list[str]:
    where = path or "(root)"
    problems: list[str] = []
    old_types, new_types = _types(old), _types(new)
    if "any" not in old_types:
        widened = new_types - old_types
        if "integer" in widened and "number" in old_types:
            widened.discard("integer")
        if widened:
            return [f"{where}: type widened from {sorted(old_types)} to {sorted(new_types)}"]
    if "const" in old and new.get("const") != old["const"]:
        problems.append(f"{where}: const changed from {old['const']!r} to {new.get('const')!r}")
    if "enum" in old:
        added = [v for v in new.get("enum", ["<any value>"]) if v not in old["enum"]]
        if added:
            problems.append(f"{where}: enum values added {added} (old consumers reject them)")
    for key in ("pattern", "format"):
        if key in old and new.get(key) != old[key]:
            problems.append(f"{where}: {key} changed from {old[key]!r} to {new.get(key)!r}")
    for key, kind in _WIDENING_BOUNDS.items():
        if key in old:
            nv = new.get(key)
            if nv is None or (kind == "max" and nv > old[key]) or (kind == "min" and nv < old[key]):
                problems.append(f"{where}: {key} relaxed from {old[key]} to {nv}")
    if "object" in old_types and "object" in new_types:
        old_props: dict[str, Schema] = old.get("properties", {})
        new_props: dict[str, Schema] = new.get("properties", {})
        new_required = set(new.get("required", []))
        for name in old.get("required", []):
            if name not in new_props:
                problems.append(f"{path}.{name}".lstrip(".") + ": required field removed")
            elif name not in new_required:
                problems.append(f"{path}.{name}".lstrip(".") + ": required field made optional")
        for name, old_prop in old_props.items():
            if name in new_props:
                problems.extend(
                    _compare(old_prop, new_props[name], old_root, new_root, f"{path}.{name}".lstrip("."))
                )
        if old.get("additionalProperties") is False:
            for name in new_props.keys() - old_props.keys():
                problems.append(
                    f"{path}.{name}".lstrip(".") + ": added where the old schema forbids extra fields"
                )
    if "array" in old_types and "array" in new_types and "items" in old and "items" in new:
        problems.extend(_compare(old["items"], new["items"], old_root, new_root, f"{path}[]"))
    return problems
