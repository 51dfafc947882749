"""Requests checked against Discord's own OpenAPI spec (discord/discord-api-spec, MIT), vendored in
``../shared/discord-api-spec/openapi.json`` next to the checkout.

`SpecValidator.check(method, path, query, body)` finds the spec's operation for a request, checks its
query parameters and its JSON body (or a multipart request's ``payload_json``) with `jsonschema`
(Draft 2020-12, which OpenAPI 3.1 schemas are), plus the limits Discord applies to bots that the
spec leaves wider (message content: 2,000 characters, not the spec's 4,000). Each problem comes back
as an `Invalid` with the field path Discord's 50035 errors use (``components.0.components.1.label``).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from testkit import REPO_ROOT

SPEC_PATH = REPO_ROOT.parent / "shared" / "discord-api-spec" / "openapi.json"
"""Where the spec lives: ../shared/ relative to the repository root (here and in CI)."""

SPEC_URI = "urn:discord-api-spec"
BOT_CONTENT_LIMIT = 2000  # Discord's limit on a bot's message content (the spec allows 4,000)
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False, "True": True, "False": False}


class SpecMissing(RuntimeError):
    """The vendored spec is not where it must be: the strict loopback cannot run without it."""


@dataclass(frozen=True)
class Invalid:
    """One field Discord would refuse: its dotted path (empty for the whole body), a code, a message."""

    path: str
    code: str
    message: str


@dataclass(frozen=True)
class SpecViolation:
    """A request the spec refuses, as the loopback saw it."""

    method: str
    path: str
    problems: tuple[Invalid, ...]

    def __str__(self) -> str:
        fields = "; ".join(f"{p.path or '<body>'}: {p.message}" for p in self.problems)
        return f"{self.method} {self.path}: {fields}"


@dataclass(frozen=True)
class _Operation:
    template: str
    pattern: re.Pattern[str]
    literal_segments: int
    pointer: str  # JSON pointer of the operation in the spec


def load_spec(path: Path = SPEC_PATH) -> dict[str, Any]:
    """The spec's JSON, or `SpecMissing` saying where it was looked for."""
    if not path.is_file():
        raise SpecMissing(
            f"Discord's OpenAPI spec is missing: expected {path} (discord/discord-api-spec's openapi.json,"
            " vendored in ../shared/discord-api-spec/ next to the repository)"
        )
    spec: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return spec


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _compile(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    regex = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(f"^{regex}$")


def _problem(error: ValidationError) -> Invalid:
    path = ".".join(str(p) for p in error.absolute_path)
    code = {"maxLength": "BASE_TYPE_MAX_LENGTH", "required": "BASE_TYPE_REQUIRED"}.get(
        str(error.validator), "BASE_TYPE_INVALID"
    )
    return Invalid(path, code, error.message[:300])


def _is_discriminator(error: ValidationError) -> bool:
    """An error on a union member's ``type`` tag: that member is not the one the body meant."""
    path = list(error.absolute_path)
    return bool(path) and path[-1] == "type" and error.validator in ("enum", "const")


def _depth(errors: list[ValidationError]) -> int:
    return max(len(e.absolute_path) for e in errors)


def _leaves(errors: Iterator[ValidationError] | list[ValidationError]) -> list[ValidationError]:
    """The errors to report: inside an anyOf, those of the member whose ``type`` tag matched
    (else the deepest), recursively, rather than 'not valid under any schema'."""
    out: list[ValidationError] = []
    for error in errors:
        if not error.context:
            out.append(error)
            continue
        branches: dict[Any, list[ValidationError]] = {}
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        candidates = [b for b in branches.values() if not any(_is_discriminator(e) for e in b)]
        # the member that got furthest into the body (a null-or-object union: the object), then fewest
        best = min(candidates or list(branches.values()), key=lambda b: (-_depth(b), len(b)))
        out.extend(_leaves(best))
    return out


def _any_of(node: Any) -> Any:
    """`oneOf` read as `anyOf`: the spec's unions are tagged (a component's `type`, null or not), so
    "exactly one" equals "at least one" for them, and `anyOf` stops at the first match instead of
    trying every member (about ten times faster on a message with buttons)."""
    if isinstance(node, dict):
        return {("anyOf" if k == "oneOf" else k): _any_of(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_any_of(v) for v in node]
    return node


def _lenient(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec as the validator reads it: unions as `anyOf`, and snowflakes also accepted as
    integers, as Discord does (discord.py sends a new attachment's id as its file's index, and
    allowed_mentions' user ids as integers)."""
    patched: dict[str, Any] = _any_of(spec)
    schemas = patched["components"]["schemas"]
    schemas["SnowflakeType"] = {"anyOf": [schemas["SnowflakeType"], {"type": "integer", "minimum": 0}]}
    return patched


class SpecValidator:
    """Checks requests against the spec; validators are built per operation on first use."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.spec = _lenient(spec)
        resource: Resource[Any] = Resource.from_contents(self.spec, default_specification=DRAFT202012)
        self._registry: Registry[Any] = Registry().with_resource(SPEC_URI, resource)
        ops: list[_Operation] = []
        for template in spec["paths"]:
            literal = sum(1 for seg in template.split("/") if seg and not seg.startswith("{"))
            ops.append(_Operation(template, _compile(template), literal, f"/paths/{_escape(template)}"))
        # '/users/@me' before '/users/{user_id}': the more literal template wins.
        self._routes = sorted(ops, key=lambda o: -o.literal_segments)

    @classmethod
    @functools.cache
    def default(cls) -> SpecValidator:
        """The validator over the vendored spec (loaded once per process)."""
        return cls(load_spec())

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Any]] | None:
        """(pointer, operation object) of the spec's operation for `method path`, or None."""
        for op in self._routes:
            if op.pattern.match(path):
                item = self.spec["paths"][op.template]
                found = item.get(method.lower())
                if found is not None:
                    return f"{op.pointer}/{method.lower()}", found
        return None

    def check(
        self, method: str, path: str, query: Mapping[str, str], body: Any, *, multipart: bool = False
    ) -> list[Invalid]:
        """What Discord would refuse in this request (empty: valid). `body` is the parsed JSON (None
        when there is none); for multipart requests, their ``payload_json``."""
        found = self.operation(method, path)
        if found is None:
            return [Invalid("", "UNKNOWN_ROUTE", f"{method} {path} is not in Discord's API")]
        pointer, op = found
        problems = self._check_query(op, self.spec["paths"], query)
        if body is not None:
            problems += self._check_body(pointer, op, body, multipart)
        return problems

    def _check_query(self, op: Mapping[str, Any], paths: Any, query: Mapping[str, str]) -> list[Invalid]:
        params = {p["name"]: p for p in op.get("parameters", []) if p.get("in") == "query"}
        problems: list[Invalid] = []
        for name, param in params.items():
            if param.get("required") and name not in query:
                problems.append(Invalid(name, "BASE_TYPE_REQUIRED", "This field is required"))
        for name, raw in query.items():
            param = params.get(name)
            if param is None:
                continue  # Discord ignores query parameters it does not know
            schema = param.get("schema", {})
            value: Any = raw
            kind = schema.get("type")
            if kind == "boolean":
                if raw not in _BOOLEANS:
                    problems.append(Invalid(name, "BASE_TYPE_BOOLEAN", f"{raw!r} is not a boolean"))
                    continue
                value = _BOOLEANS[raw]
            elif kind in ("integer", "number"):
                try:
                    value = int(raw) if kind == "integer" else float(raw)
                except ValueError:
                    problems.append(Invalid(name, "NUMBER_TYPE_COERCE", f"{raw!r} is not a number"))
                    continue
            validator = self._validator(schema)
            problems += [
                Invalid(name, p.code, p.message) for p in map(_problem, validator.iter_errors(value))
            ]
        return problems

    def _check_body(self, pointer: str, op: Mapping[str, Any], body: Any, multipart: bool) -> list[Invalid]:
        content = op.get("requestBody", {}).get("content", {})
        if "application/json" not in content:
            return [Invalid("", "UNEXPECTED_BODY", "this endpoint takes no JSON body")] if body else []
        schema_pointer = f"{pointer}/requestBody/content/application~1json/schema"
        validator = self._validator({"$ref": f"{SPEC_URI}#{schema_pointer}"})
        problems = [_problem(e) for e in _leaves(validator.iter_errors(body))]
        return problems + _bot_limits(body)

    @functools.lru_cache(maxsize=512)  # noqa: B019  (one validator per schema, for this validator's life)
    def _cached(self, schema_json: str) -> Draft202012Validator:
        return Draft202012Validator(json.loads(schema_json), registry=self._registry)

    def _validator(self, schema: Mapping[str, Any]) -> Draft202012Validator:
        return self._cached(json.dumps(schema, sort_keys=True))


def _bot_limits(body: Any) -> list[Invalid]:
    """Limits Discord applies to bots where the spec is wider."""
    problems: list[Invalid] = []
    for path, content in _contents(body):
        if isinstance(content, str) and len(content) > BOT_CONTENT_LIMIT:
            problems.append(
                Invalid(path, "BASE_TYPE_MAX_LENGTH", f"Must be {BOT_CONTENT_LIMIT} or fewer in length.")
            )
    return problems


def _contents(body: Any) -> Iterator[tuple[str, Any]]:
    """Message content in a message body or an interaction callback's ``data``."""
    if not isinstance(body, dict):
        return
    if "content" in body:
        yield "content", body["content"]
    data = body.get("data")
    if isinstance(data, dict) and "content" in data:
        yield "data.content", data["content"]


def form_errors(problems: list[Invalid]) -> dict[str, Any]:
    """Discord's nested ``errors`` object of a 50035 answer: ``{"content": {"_errors": [...]}}``."""
    tree: dict[str, Any] = {}
    for problem in problems:
        node = tree
        for part in problem.path.split(".") if problem.path else []:
            node = node.setdefault(part, {})
        node.setdefault("_errors", []).append({"code": problem.code, "message": problem.message})
    return tree
