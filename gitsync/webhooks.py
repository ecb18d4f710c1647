"""What a webhook request means: pure functions of (headers, body) to a verdict.

Why apart from the HTTP server: deciding whether a GitHub or GitLab push
concerns the followed branch, whether a signature holds, and what to answer
is the webhooks' meaning, not HTTP. As pure functions (no sockets, no
threads, no logging) they are tested with plain values, and the server only
frames the request, asks for a verdict, counts it, triggers and answers.

Reading the body within its size limit is the transport's job (it answers
400/411/413 itself and counts "refused"); a verdict starts from a body that
was read in full.

Secrets and signatures are compared in constant time, and no verdict carries
them: answers and log details echo only refs and event names, cut short.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Final, Literal, Protocol
from urllib.parse import parse_qs

Outcome = Literal["triggered", "ignored", "ping", "unauthorized", "refused", "invalid"]
# The `outcome` label values of gitsync_webhook_requests_total. "refused" (size or
# framing) is the transport's; the functions below return the others.
OUTCOMES: Final[tuple[Outcome, ...]] = (
    "triggered",
    "ignored",
    "ping",
    "unauthorized",
    "refused",
    "invalid",
)

_ECHO_LIMIT: Final = 200  # refs and event names echoed back are cut to this length
_SIGNATURE_HELP: Final = "expected sha256=<hex HMAC-SHA256 of the raw body, keyed with the secret>"


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookVerdict:
    """What to do with one webhook request, and what to answer.

    `trigger` is the source to queue a pass under (`webhook:<hook>`), or None.
    `answer` is the JSON document sent with `status`. `detail` says why, for a
    debug log line; it holds no secret.
    """

    outcome: Outcome
    status: HTTPStatus
    answer: Mapping[str, object] = field(default_factory=dict)
    detail: str = ""
    trigger: str | None = None


class Judge(Protocol):
    """The shape of `github`, `gitlab` and `generic`."""

    def __call__(
        self, headers: Mapping[str, str], body: bytes, *, secret: bytes, tracked: frozenset[str]
    ) -> WebhookVerdict: ...


class NotAJsonObject(ValueError):
    """The body is not the JSON object asked for; the message is the client's answer."""


def tracked_refs(branch: str) -> frozenset[str]:
    """The git refs whose pushes concern a daemon that follows `branch` (a branch or a tag)."""
    if branch.startswith("refs/"):
        return frozenset({branch})
    return frozenset({f"refs/heads/{branch}", f"refs/tags/{branch}"})


def signature_matches(secret: bytes, body: bytes, header: str | None) -> bool:
    """Check a `sha256=<hex>` HMAC header against `body`, in constant time."""
    if header is None:
        return False
    scheme, sep, given = header.strip().partition("=")
    if not sep or scheme.strip().lower() != "sha256":
        return False
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest().encode("ascii")
    # Header values arrive decoded as latin-1, so this encoding restores the bytes sent.
    return hmac.compare_digest(expected, given.strip().lower().encode("latin-1", "replace"))


def token_matches(secret: bytes, header: str | None) -> bool:
    """Compare a plain token header with the secret in constant time.

    Both sides are hashed first, so not even the secret's length shows in the timing.
    """
    given = (header or "").encode("latin-1", "replace")
    return hmac.compare_digest(hashlib.sha256(secret).digest(), hashlib.sha256(given).digest())


def echo(text: object) -> str:
    """A client-supplied value cut short, for messages (JSON encoding escapes the rest)."""
    value = str(text)
    return value if len(value) <= _ECHO_LIMIT else value[:_ECHO_LIMIT] + "…"


def json_object(
    body: bytes, *, content_type: str | None, form_field: str | None = None
) -> dict[str, object]:
    """The body as a JSON object, or a form field holding one; else raise `NotAJsonObject`.

    The form field is read only when `content_type` says the body is a form
    (GitHub's "application/x-www-form-urlencoded" delivery).
    """
    media_type = (content_type or "").split(";")[0].strip().lower()
    try:
        if form_field is not None and media_type == "application/x-www-form-urlencoded":
            fields = parse_qs(body.decode("utf-8"), strict_parsing=False)
            text: str | bytes = fields.get(form_field, [""])[0]
        else:
            text = body
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly nested input
        raise NotAJsonObject(f"request body is not valid JSON: {echo(exc)}") from exc
    if not isinstance(document, dict):
        raise NotAJsonObject(f"request body must be a JSON object, got {type(document).__name__}")
    return document


def header_map(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Headers by lower-case name; of a repeated header the first counts, as with `Message.get`."""
    fields: dict[str, str] = {}
    for name, value in pairs:
        fields.setdefault(name.lower(), value)
    return fields


def github(
    headers: Mapping[str, str], body: bytes, *, secret: bytes, tracked: frozenset[str]
) -> WebhookVerdict:
    """A GitHub delivery: signed with X-Hub-Signature-256; pings answered, pushes checked."""
    fields = header_map(headers.items())
    if not signature_matches(secret, body, fields.get("x-hub-signature-256")):
        return _unauthorized("X-Hub-Signature-256", _SIGNATURE_HELP)
    event = fields.get("x-github-event")
    if event == "ping":
        answer = {"triggered": False, "pong": True}
        return WebhookVerdict(outcome="ping", status=HTTPStatus.OK, answer=answer)
    if event != "push":
        return _ignored(f"event {echo(event)}")
    try:
        payload = json_object(body, content_type=fields.get("content-type"), form_field="payload")
    except NotAJsonObject as exc:
        return _invalid(str(exc))
    return _push("github", payload, tracked)


def gitlab(
    headers: Mapping[str, str], body: bytes, *, secret: bytes, tracked: frozenset[str]
) -> WebhookVerdict:
    """A GitLab delivery: the secret in X-Gitlab-Token; push and tag push events checked."""
    fields = header_map(headers.items())
    if not token_matches(secret, fields.get("x-gitlab-token")):
        return _unauthorized("X-Gitlab-Token", "the configured secret")
    try:
        payload = json_object(body, content_type=fields.get("content-type"))
    except NotAJsonObject as exc:
        return _invalid(str(exc))
    kind = payload.get("object_kind")
    if kind not in (None, "push", "tag_push"):
        return _ignored(f"event {echo(kind)}")
    return _push("gitlab", payload, tracked)


def generic(
    headers: Mapping[str, str], body: bytes, *, secret: bytes, tracked: frozenset[str]
) -> WebhookVerdict:
    """Any sender that signs the body into X-Signature: every signed request triggers.

    `tracked` is unused (the body is not parsed); it keeps the three hooks one shape.
    """
    del tracked
    if not signature_matches(secret, body, header_map(headers.items()).get("x-signature")):
        return _unauthorized("X-Signature", _SIGNATURE_HELP)
    return _triggered("generic", "signed request")


def _push(hook: str, payload: Mapping[str, object], tracked: frozenset[str]) -> WebhookVerdict:
    ref = payload.get("ref")
    if not isinstance(ref, str):
        return _invalid("push event has no string field 'ref' (refs/heads/NAME)")
    if ref in tracked:
        return _triggered(hook, f"push to {ref}")
    return _ignored(f"push to {echo(ref)}")


def _triggered(hook: str, detail: str) -> WebhookVerdict:
    return WebhookVerdict(
        outcome="triggered",
        status=HTTPStatus.ACCEPTED,
        answer={"triggered": True},
        detail=detail,
        trigger=f"webhook:{hook}",
    )


def _ignored(detail: str) -> WebhookVerdict:
    answer = {"triggered": False, "reason": f"ignored: {detail}"}
    return WebhookVerdict(
        outcome="ignored", status=HTTPStatus.ACCEPTED, answer=answer, detail=detail
    )


def _unauthorized(header: str, expected: str) -> WebhookVerdict:
    message = f"missing or invalid {header} header; {expected}"
    return WebhookVerdict(
        outcome="unauthorized",
        status=HTTPStatus.UNAUTHORIZED,
        answer={"error": message},
        detail="authentication failed",
    )


def _invalid(message: str) -> WebhookVerdict:
    return WebhookVerdict(
        outcome="invalid", status=HTTPStatus.BAD_REQUEST, answer={"error": message}, detail=message
    )


# The hooks by the name in their path (/hooks/<name>) and in the `hook` label.
HOOKS: Final[Mapping[str, Judge]] = {"github": github, "gitlab": gitlab, "generic": generic}
