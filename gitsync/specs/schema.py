"""The JSON Schema check: "valid?" in microseconds, and for the documents that fail, why.

The JSON Schema in `gitsync/schemas/` is the single statement of structure.
A small compiled checker for the keywords that schema uses answers "valid?"
(`_Compiler`), and `jsonschema`'s Draft202012Validator (imported only then: it
costs a fifth of a second to import) explains the documents that fail, each
error turned into a message that says what would be valid.

Why not `fastjsonschema`, which does what `_Compiler` does: measured on
`bench/validate.py`'s corpus (10,000 documents; 2 busy cores; medians of three
interleaved runs each), whole `gitsync validate` took 0.66 s (1,000 files) and
0.76 s (10,000 files) with `_Compiler`, 0.92 s and 1.16 s with fastjsonschema
2.22.3; in one process, `load_repository` over the 1,000 files cost 0.60 s of
CPU against 0.72 s (best of seven): about 30 µs a document against 8 µs, plus
35 ms to import and compile the library. It is more than 10% slower, and it
knows drafts 4 to 7 only: keywords it does not know (2020-12's `prefixItems`)
it ignores, and so accepts what jsonschema rejects, where `_Compiler` refuses
them and leaves the schema to jsonschema.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from gitsync.specs.context import _Context
from gitsync.specs.text import JsonPath, _clip, _describe, _did_you_mean, _short

if TYPE_CHECKING:
    import jsonschema

SCHEMA_PATH: Final = Path(__file__).parent.parent / "schemas" / "imagecache.schema.json"


class _Validator:
    """The schema, a fast compiled check, and jsonschema for explanations (built lazily, once)."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        try:
            compiled: Callable[[Any], bool] | None = _Compiler(schema).build()
        except _Unsupported:
            compiled = None  # a keyword the fast path does not know: jsonschema decides alone
        self._compiled = compiled
        self._full: jsonschema.Draft202012Validator | None = None

    def fast(self, instance: Any) -> bool:
        if self._compiled is not None:
            return self._compiled(instance)
        return bool(self.full.is_valid(instance))

    @property
    def full(self) -> jsonschema.Draft202012Validator:
        if self._full is None:
            import jsonschema  # noqa: PLC0415  # 0.2 s to import; valid repositories never need it

            self._full = jsonschema.Draft202012Validator(self.schema)
        return self._full


_VALIDATOR: _Validator | None = None


def _validator() -> _Validator:
    global _VALIDATOR  # noqa: PLW0603  # built once per process, on first use
    if _VALIDATOR is None:
        with SCHEMA_PATH.open(encoding="utf-8") as stream:
            _VALIDATOR = _Validator(json.load(stream))
    return _VALIDATOR


def schema() -> dict[str, Any]:
    """The ImageCache JSON Schema (a fresh copy of the packaged file)."""
    with SCHEMA_PATH.open(encoding="utf-8") as stream:
        loaded: dict[str, Any] = json.load(stream)
    return loaded


def is_schema_valid(instance: Any) -> bool:
    """The compiled fast check alone; tests compare it with jsonschema."""
    return _validator().fast(instance)


class _Unsupported(Exception):  # internal signal
    pass


_ANNOTATIONS = frozenset(
    {"$schema", "$id", "$comment", "$defs", "title", "description", "default", "examples"}
)


class _Compiler:
    """Compiles the subset of JSON Schema 2020-12 that imagecache.schema.json uses to Python.

    The generated function is straight-line code (isinstance checks, set and
    string comparisons, precompiled regexes), about a hundred times faster
    than jsonschema's is_valid, which matters at 10,000 documents. Any keyword
    outside the subset raises _Unsupported, and validation falls back to
    jsonschema, so the schema file stays the only statement of structure. The
    semantics copy jsonschema's (re.search for patterns, len() in code
    points, bool is not an integer, 2.0 is); a property test checks they agree.
    """

    _KEYWORDS = _ANNOTATIONS | {
        "$ref", "type", "const", "enum", "pattern", "minLength", "maxLength", "minimum",
        "maximum", "minItems", "maxItems", "items", "properties", "required",
        "additionalProperties", "propertyNames",
    }  # fmt: skip

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.lines: list[str] = []
        self.constants: dict[str, Any] = {}
        self.names = 0
        self.refs: list[str] = []

    def build(self) -> Callable[[Any], bool]:
        self.lines = ["def check(v0):"]
        self.emit(self.root, "v0", 1)
        self.lines.append("    return True")
        namespace: dict[str, Any] = dict(self.constants)
        code = compile("\n".join(self.lines), "<imagecache.schema.json>", "exec")
        exec(code, namespace)  # noqa: S102  # our own generated code from our own packaged schema
        check: Callable[[Any], bool] = namespace["check"]
        return check

    def _name(self, prefix: str) -> str:
        self.names += 1
        return f"{prefix}{self.names}"

    def _constant(self, value: Any) -> str:
        name = self._name("C")
        self.constants[name] = value
        return name

    def _line(self, indent: int, text: str) -> None:
        self.lines.append("    " * indent + text)

    def _block(self, indent: int, header: str, body: Callable[[], None]) -> None:
        """Emit `header:` and its body, or nothing when the body is empty."""
        start = len(self.lines)
        self._line(indent, header)
        body()
        if len(self.lines) == start + 1:
            del self.lines[start]

    def _resolve(self, ref: str) -> Any:
        if not ref.startswith("#/") or ref in self.refs:
            raise _Unsupported(ref)  # remote or recursive references: leave them to jsonschema
        target: Any = self.root
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        return target

    def emit(self, schema: Any, var: str, indent: int) -> None:  # noqa: PLR0912  # one branch per keyword reads best
        if schema is True:
            return
        if schema is False:
            self._line(indent, "return False")
            return
        if not isinstance(schema, dict):
            raise _Unsupported(repr(schema))
        unknown = set(schema) - self._KEYWORDS
        if unknown:
            raise _Unsupported(", ".join(sorted(unknown)))
        if "$ref" in schema:
            target = self._resolve(schema["$ref"])
            self.refs.append(schema["$ref"])
            self.emit(target, var, indent)
            self.refs.pop()
        if "type" in schema:
            kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            tests = " or ".join(_TYPE_TESTS[k].format(v=var) for k in kinds)
            self._line(indent, f"if not ({tests}): return False")
        for keyword in ("const", "enum"):
            if keyword in schema:
                allowed = schema[keyword] if keyword == "enum" else [schema[keyword]]
                if not all(isinstance(a, str) for a in allowed):
                    raise _Unsupported(keyword)  # jsonschema's equality of 1, 1.0, True is subtle
                options = self._constant(frozenset(allowed))
                self._line(
                    indent, f"if not (isinstance({var}, str) and {var} in {options}): return False"
                )
        declared = schema.get("type")
        known = declared if isinstance(declared, str) else None  # checked above: no guard below
        blocks: list[tuple[set[str], str, str, Callable[[dict[str, Any], str, int], None]]] = [
            ({"pattern", "minLength", "maxLength"}, "string", "isinstance({v}, str)", self._string),
            (
                {"minimum", "maximum"},
                "number",
                "isinstance({v}, (int, float)) and not isinstance({v}, bool)",
                self._number,
            ),
            ({"minItems", "maxItems", "items"}, "array", "isinstance({v}, list)", self._array),
            (
                {"properties", "required", "additionalProperties", "propertyNames"},
                "object",
                "isinstance({v}, dict)",
                self._object,
            ),
        ]
        for keywords, kind, guard, emit_body in blocks:
            if not keywords & schema.keys():
                continue
            if known == kind or (kind == "number" and known == "integer"):
                emit_body(schema, var, indent)
            else:
                body = functools.partial(emit_body, schema, var, indent + 1)
                self._block(indent, f"if {guard.format(v=var)}:", body)

    def _string(self, schema: dict[str, Any], var: str, indent: int) -> None:
        if "minLength" in schema:
            self._line(indent, f"if len({var}) < {int(schema['minLength'])}: return False")
        if "maxLength" in schema:
            self._line(indent, f"if len({var}) > {int(schema['maxLength'])}: return False")
        if "pattern" in schema:
            pattern = self._constant(re.compile(schema["pattern"]))
            self._line(indent, f"if {pattern}.search({var}) is None: return False")

    def _number(self, schema: dict[str, Any], var: str, indent: int) -> None:
        if "minimum" in schema:
            self._line(indent, f"if {var} < {self._constant(schema['minimum'])}: return False")
        if "maximum" in schema:
            self._line(indent, f"if {var} > {self._constant(schema['maximum'])}: return False")

    def _array(self, schema: dict[str, Any], var: str, indent: int) -> None:
        if "minItems" in schema:
            self._line(indent, f"if len({var}) < {int(schema['minItems'])}: return False")
        if "maxItems" in schema:
            self._line(indent, f"if len({var}) > {int(schema['maxItems'])}: return False")
        if "items" in schema:
            item = self._name("v")
            self._block(
                indent,
                f"for {item} in {var}:",
                lambda: self.emit(schema["items"], item, indent + 1),
            )

    def _object(self, schema: dict[str, Any], var: str, indent: int) -> None:
        for name in schema.get("required", ()):
            self._line(indent, f"if {self._constant(name)} not in {var}: return False")
        properties: dict[str, Any] = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        if not properties and extra is True and "propertyNames" not in schema:
            return
        key, value = self._name("k"), self._name("v")

        def loop() -> None:
            if "propertyNames" in schema:
                self.emit(schema["propertyNames"], key, indent + 1)
            branch = "if"
            for name, sub in properties.items():
                self._line(indent + 1, f"{branch} {key} == {self._constant(name)}:")
                start = len(self.lines)
                self.emit(sub, value, indent + 2)
                if len(self.lines) == start:
                    self._line(indent + 2, "pass")
                branch = "elif"
            if extra is not True:
                if branch == "if":
                    self.emit(extra, value, indent + 1)
                else:
                    self._line(indent + 1, "else:")
                    start = len(self.lines)
                    self.emit(extra, value, indent + 2)
                    if len(self.lines) == start:
                        self._line(indent + 2, "pass")

        self._block(indent, f"for {key}, {value} in {var}.items():", loop)


_TYPE_TESTS = {
    "object": "isinstance({v}, dict)",
    "array": "isinstance({v}, list)",
    "string": "isinstance({v}, str)",
    # jsonschema's rule: bool is not an integer; a float with no fraction is.
    "integer": "(isinstance({v}, int) and not isinstance({v}, bool)"
    " or isinstance({v}, float) and {v}.is_integer())",
    "number": "(isinstance({v}, (int, float)) and not isinstance({v}, bool))",
    "boolean": "isinstance({v}, bool)",
    "null": "{v} is None",
}


def _schema_diagnostics(doc: dict[str, Any], ctx: _Context) -> None:
    """Explain every schema error with its position and what would be valid."""
    full = _validator().full
    reported: set[tuple[JsonPath, str]] = set()
    for error in full.iter_errors(doc):
        path: JsonPath = tuple(error.path)
        keyword = str(error.validator)
        sub: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
        instance = error.instance
        if "propertyNames" in error.schema_path:
            # jsonschema reports a bad key with the object's path and the key as instance.
            key_path = (*path, instance)
            if (key_path, "key") in reported:
                continue
            reported.add((key_path, "key"))
            ctx.add(
                key_path,
                "schema",
                f"{ctx.name(path)} key {_short(instance)} must be {_expected(sub)}",
                key=True,
            )
            continue
        if keyword == "required":
            for name in error.validator_value:
                if name in instance or ((*path, name), "required") in reported:
                    continue
                reported.add(((*path, name), "required"))
                wanted = _expected(_subschema(_validator().schema, sub, name))
                ctx.add(
                    (*path, name),
                    "schema",
                    f"{ctx.name((*path, name))} is required: {wanted}",
                    location=ctx.location(path, key=True) if path else ctx.location(()),
                )
            continue
        if keyword == "additionalProperties" and error.validator_value is False:
            allowed = list(sub.get("properties", {}))
            for name in instance:
                if name in allowed or ((*path, name), "unknown") in reported:
                    continue
                reported.add(((*path, name), "unknown"))
                ctx.add(
                    (*path, name),
                    "unknown-field",
                    f"unknown field {ctx.name((*path, name))}{_did_you_mean(str(name), allowed)}; "
                    f"{ctx.name(path) or 'the document'} takes {', '.join(allowed)}",
                    key=True,
                )
            continue
        if (path, "value") in reported:
            continue  # one message per value: a 300-character 'Bad_Name' breaks two rules
        reported.add((path, "value"))
        rule = "schema"
        if len(path) == 3 and path[:2] == ("spec", "imagePullSecrets") and keyword != "type":
            rule = "pull-secret"
        ctx.add(path, rule, _message(ctx.name(path), keyword, sub, instance, error.message))


def _subschema(root: dict[str, Any], schema: dict[str, Any], name: str) -> dict[str, Any]:
    found = schema.get("properties", {}).get(name, {})
    return _deref(root, found) if isinstance(found, dict) else {}


def _deref(root: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """A schema with its local $ref merged in (the referring schema's keys win)."""
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    target: Any = root
    for part in ref[2:].split("/"):
        target = target.get(part, {}) if isinstance(target, dict) else {}
    merged = dict(_deref(root, target)) if isinstance(target, dict) else {}
    merged.update({k: v for k, v in schema.items() if k not in ("$ref", "description")})
    return merged


def _message(name: str, keyword: str, schema: dict[str, Any], instance: Any, fallback: str) -> str:
    name = name or "the document"
    resolved = _deref(_validator().schema, schema)
    expected = _expected(resolved)
    got = _describe(instance)
    if keyword in ("type", "const", "enum", "minimum", "maximum", "pattern", "minLength"):
        hint = ""
        kinds = _types(resolved)
        if keyword == "type" and "string" in kinds and isinstance(instance, bool | int | float):
            hint = "; quote it to make it a string"
        elif keyword == "type" and "integer" in kinds and isinstance(instance, str):
            hint = "; write the number without quotes" if instance.strip().isdigit() else ""
        return f"{name} must be {expected}, got {got}{hint}"
    if keyword == "maxLength":
        return f"{name} must be {expected}, got {len(instance)} characters"
    if keyword in ("minItems", "maxItems"):
        count = "an empty list" if not instance else f"{len(instance)} items"
        return f"{name} must be {expected}, got {count}"
    return f"{name}: {_clip(fallback, 200)}"  # jsonschema's words, for keywords not named above


def _types(schema: dict[str, Any]) -> list[str]:
    kinds = schema.get("type", [])
    return kinds if isinstance(kinds, list) else [kinds]


def _expected(schema: dict[str, Any]) -> str:  # noqa: PLR0911  # one phrase per schema shape
    """What a schema accepts, as a phrase: "an integer from 20 to 32000"."""
    schema = _deref(_validator().schema, schema)
    if "const" in schema:
        return repr(schema["const"])
    if "enum" in schema:
        return "one of " + ", ".join(repr(v) for v in schema["enum"])
    kinds = _types(schema)
    if kinds == ["integer"]:
        low, high = schema.get("minimum"), schema.get("maximum")
        if low is not None and high is not None:
            return f"an integer from {low} to {high}"
        if low is not None:
            return f"an integer of at least {low}"
        return "an integer"
    if kinds == ["string"] and ("pattern" in schema or "maxLength" in schema):
        title = schema.get("title", "string")
        article = "an" if title[0].lower() in "aeiou" else "a"
        detail = schema.get("description")
        return f"{article} {title} ({detail})" if detail else f"{article} {title}"
    if kinds == ["array"]:
        items = _deref(_validator().schema, schema.get("items", {}))
        noun = items.get("title", "item")
        low, high = schema.get("minItems", 0), schema.get("maxItems")
        if low and high is not None:
            return f"a list of {low} to {high} {noun}s"
        if low:
            return f"a list of at least {low} {noun}" + ("s" if low != 1 else "")
        return f"a list of {noun}s"
    if kinds == ["object"]:
        required = schema.get("required")
        return f"a mapping with {', '.join(required)}" if required else "a mapping"
    words = {"string": "a string", "null": "null", "boolean": "true or false", "number": "a number"}
    if kinds:
        return " or ".join(words.get(k, k) for k in kinds)
    return "valid"
