"""Schema errors in words: what was given and what the key accepts ("a number, or a fraction such as 3/255").

jsonschema says "is not valid under any of the given schemas" for a oneOf, and "does not match '^[A-Za-z]...'"
for a pattern; a user needs the accepted forms. They are derived from the schema itself (type, bounds, enum,
items), or taken from an `accepts:` text where a pattern says more than words can derive.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import jsonschema

_TYPE_WORDS = {"integer": "a whole number", "number": "a number", "string": "text", "boolean": "true or false",
               "array": "a list", "object": "a mapping of keys", "null": "null"}


def _is_integer(_checker, instance) -> bool:
    # JSON Schema draft 7 counts 3.0 as an integer; Python's range(3.0) does not: an epoch count of 3.0 is
    # refused here rather than by whichever loop receives it.
    return isinstance(instance, int) and not isinstance(instance, bool)


Validator = jsonschema.validators.extend(
    jsonschema.Draft7Validator, type_checker=jsonschema.Draft7Validator.TYPE_CHECKER.redefine("integer", _is_integer))


def resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in schema:
        node: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _bounds(schema: Mapping[str, Any]) -> str:
    parts = []
    for key, op in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")):
        if key in schema:
            parts.append(f"{op} {schema[key]:g}" if isinstance(schema[key], float) else f"{op} {schema[key]}")
    return " and ".join(parts)


def accepted(schema: Mapping[str, Any], root: Mapping[str, Any]) -> str:
    """The values `schema` accepts, in words."""
    schema = resolve(schema, root)
    if "accepts" in schema:
        return schema["accepts"]
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return ", or ".join(dict.fromkeys(accepted(s, root) for s in schema[key]))
    if "const" in schema:
        return repr(schema["const"])
    if "enum" in schema:
        return "one of " + ", ".join(map(repr, schema["enum"]))
    kinds = schema.get("type")
    if kinds is None:
        return "any value"
    words = " or ".join(_TYPE_WORDS[t] for t in ([kinds] if isinstance(kinds, str) else kinds))
    if kinds in ("integer", "number") and _bounds(schema):
        words += f" {_bounds(schema)}"
    if kinds == "string" and schema.get("minLength"):
        words = "non-empty text"
    if kinds == "array":
        if "items" in schema:
            words += f" of {accepted(schema['items'], root)}"
        if schema.get("minItems"):
            words += f" (at least {schema['minItems']})"
        if schema.get("maxItems") == schema.get("minItems") and "maxItems" in schema:
            words = words.replace("(at least", "(exactly")
        if schema.get("uniqueItems"):
            words += ", each once"
    return words


def _given(value: Any) -> str:
    if isinstance(value, str):
        return f"{value!r} (text)"
    if isinstance(value, float) and value.is_integer() and math.isfinite(value):
        return f"{value!r} (a number with a decimal point)"
    if isinstance(value, (dict, list)):
        text = repr(value)
        return text if len(text) <= 80 else text[:77] + "..."
    return repr(value)


def explain(error: jsonschema.ValidationError, root: Mapping[str, Any]) -> str:
    """One error as `got <value>; expected <accepted forms>`."""
    kind = error.validator
    if kind == "additionalProperties":
        known = sorted(resolve(error.schema, root).get("properties", {}))
        return f"unknown key; expected one of {known}"
    if kind == "required":
        return f"{error.message}; add it"
    if kind == "uniqueItems":
        return f"got {_given(error.instance)}: an entry is given twice; expected each entry once"
    counts = {"minProperties": "at least {} entry", "minItems": "at least {} item(s)", "maxItems": "at most {} item(s)"}
    if kind in counts:
        return f"got {_given(error.instance)}; expected {counts[kind].format(error.validator_value)}"
    return f"got {_given(error.instance)}; expected {accepted(error.schema, root)}"


def names_a_key(error: jsonschema.ValidationError) -> bool:
    """Whether `error` is about a key's name (propertyNames: the name is error.instance), not its value."""
    return "propertyNames" in error.schema_path
