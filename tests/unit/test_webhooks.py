"""Webhook semantics as pure functions of (headers, body): no socket, no thread.

What the listener answers on the wire is held by tests/integration/test_server.py;
these pin what each request means, and the body limits that the transport
applies before any webhook sees a byte.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from email.message import Message
from http import HTTPStatus
from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gitsync.metrics import WEBHOOK_HOOKS, WEBHOOK_OUTCOMES
from gitsync.server.transport import body_framing, body_refusal
from gitsync.triggers import trigger_source
from gitsync.webhooks import (
    HOOKS,
    OUTCOMES,
    NotAJsonObject,
    WebhookVerdict,
    generic,
    github,
    gitlab,
    header_map,
    json_object,
    signature_matches,
    token_matches,
    tracked_refs,
)

SECRET = b"s3cr3t-webhook-key"
MAIN = tracked_refs("main")


def sign(body: bytes, secret: bytes = SECRET) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def push(ref: object) -> bytes:
    return json.dumps({"ref": ref, "after": "0" * 40}).encode()


def from_github(body: bytes, *, event: str = "push", **headers: str) -> WebhookVerdict:
    fields = {"X-GitHub-Event": event, "X-Hub-Signature-256": sign(body), **headers}
    return github(fields, body, secret=SECRET, tracked=MAIN)


# --- GitHub ------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["refs/heads/main", "refs/tags/main"])
def test_a_github_push_to_the_followed_ref_triggers(ref: str) -> None:
    verdict = from_github(push(ref))

    assert verdict == WebhookVerdict(
        outcome="triggered",
        status=HTTPStatus.ACCEPTED,
        answer={"triggered": True},
        detail=f"push to {ref}",
        trigger="webhook:github",
    )


def test_a_github_push_to_another_branch_is_ignored() -> None:
    verdict = from_github(push("refs/heads/feature"))

    assert (verdict.outcome, verdict.status, verdict.trigger) == (
        "ignored",
        HTTPStatus.ACCEPTED,
        None,
    )
    assert verdict.answer == {"triggered": False, "reason": "ignored: push to refs/heads/feature"}


def test_a_github_ping_is_answered_without_a_pass() -> None:
    verdict = from_github(b'{"zen": "Keep it logically awesome."}', event="ping")

    assert (verdict.outcome, verdict.status, verdict.trigger) == ("ping", HTTPStatus.OK, None)
    assert verdict.answer == {"triggered": False, "pong": True}


def test_other_github_events_are_ignored_and_long_names_cut_short() -> None:
    issues = from_github(b"{}", event="issues")
    long = from_github(b"{}", event="x" * 500)

    assert (issues.outcome, issues.answer["reason"]) == ("ignored", "ignored: event issues")
    assert long.outcome == "ignored"
    assert long.answer["reason"] == "ignored: event " + "x" * 200 + "…"


def test_github_form_deliveries_carry_the_payload_field() -> None:
    body = urlencode({"payload": push("refs/heads/main").decode()}).encode()

    verdict = from_github(body, **{"Content-Type": "application/x-www-form-urlencoded"})

    assert verdict.outcome == "triggered"


@pytest.mark.parametrize(
    "signature",
    [
        None,
        "",
        "sha256=",
        "sha1=" + "0" * 40,
        sign(push("refs/heads/main"), b"wrong-key"),
        sign(push("refs/heads/other")),  # signs another body
    ],
)
def test_a_missing_or_wrong_github_signature_is_unauthorized(signature: str | None) -> None:
    body = push("refs/heads/main")
    headers = {"X-GitHub-Event": "push"}
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature

    verdict = github(headers, body, secret=SECRET, tracked=MAIN)

    assert (verdict.outcome, verdict.status, verdict.trigger) == (
        "unauthorized",
        HTTPStatus.UNAUTHORIZED,
        None,
    )
    assert verdict.answer == {
        "error": "missing or invalid X-Hub-Signature-256 header; "
        "expected sha256=<hex HMAC-SHA256 of the raw body, keyed with the secret>"
    }
    assert SECRET.decode() not in repr(verdict)


def test_an_unsigned_ping_is_unauthorized_too() -> None:
    verdict = github({"X-GitHub-Event": "ping"}, b"{}", secret=SECRET, tracked=MAIN)

    assert verdict.outcome == "unauthorized"


def test_header_names_are_case_insensitive_and_the_first_of_a_repeat_counts() -> None:
    body = push("refs/heads/main")
    lower = github(
        {"x-github-event": "push", "x-hub-signature-256": sign(body)},
        body,
        secret=SECRET,
        tracked=MAIN,
    )
    pairs = [("X-Signature", sign(body)), ("x-signature", "sha256=" + "0" * 64)]

    assert lower.outcome == "triggered"
    assert header_map(pairs) == {"x-signature": sign(body)}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "request body is not valid JSON: "),
        (b"\xff\xfe", "request body is not valid JSON: "),
        (b"[1, 2]", "request body must be a JSON object, got list"),
        (b"[" * 100_000 + b"]" * 100_000, "request body is not valid JSON: "),
    ],
)
def test_a_signed_push_that_is_not_a_json_object_is_invalid(body: bytes, message: str) -> None:
    verdict = from_github(body)

    assert (verdict.outcome, verdict.status, verdict.trigger) == (
        "invalid",
        HTTPStatus.BAD_REQUEST,
        None,
    )
    assert str(verdict.answer["error"]).startswith(message)
    assert len(str(verdict.answer["error"])) < 300  # the parser's complaint is cut short


@pytest.mark.parametrize("payload", [{}, {"ref": None}, {"ref": 7}, {"ref": ["refs/heads/main"]}])
def test_a_push_without_a_string_ref_is_invalid(payload: dict[str, object]) -> None:
    verdict = from_github(json.dumps(payload).encode())

    assert (verdict.outcome, verdict.status) == ("invalid", HTTPStatus.BAD_REQUEST)
    assert verdict.answer == {"error": "push event has no string field 'ref' (refs/heads/NAME)"}


# --- GitLab ------------------------------------------------------------------------------


def gitlab_body(ref: str, kind: str | None = "push") -> bytes:
    document: dict[str, object] = {"ref": ref}
    if kind is not None:
        document["object_kind"] = kind
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("kind", "ref"),
    [("push", "refs/heads/main"), ("tag_push", "refs/tags/main"), (None, "refs/heads/main")],
)
def test_a_gitlab_push_with_the_right_token_triggers(kind: str | None, ref: str) -> None:
    verdict = gitlab(
        {"X-Gitlab-Token": SECRET.decode()}, gitlab_body(ref, kind), secret=SECRET, tracked=MAIN
    )

    assert (verdict.outcome, verdict.trigger) == ("triggered", "webhook:gitlab")


@pytest.mark.parametrize("token", [None, "", "wrong", SECRET.decode() + "x", SECRET.decode()[:-1]])
def test_a_wrong_gitlab_token_is_unauthorized(token: str | None) -> None:
    headers = {} if token is None else {"X-Gitlab-Token": token}

    verdict = gitlab(headers, gitlab_body("refs/heads/main"), secret=SECRET, tracked=MAIN)

    assert (verdict.outcome, verdict.status) == ("unauthorized", HTTPStatus.UNAUTHORIZED)
    assert verdict.answer == {
        "error": "missing or invalid X-Gitlab-Token header; the configured secret"
    }


def test_gitlab_events_other_than_pushes_are_ignored_and_bad_json_is_invalid() -> None:
    headers = {"X-Gitlab-Token": SECRET.decode()}

    merge = gitlab(headers, gitlab_body("x", "merge_request"), secret=SECRET, tracked=MAIN)
    broken = gitlab(headers, b"{", secret=SECRET, tracked=MAIN)
    elsewhere = gitlab(headers, gitlab_body("refs/heads/dev"), secret=SECRET, tracked=MAIN)

    assert (merge.outcome, merge.answer["reason"]) == ("ignored", "ignored: event merge_request")
    assert (broken.outcome, broken.status) == ("invalid", HTTPStatus.BAD_REQUEST)
    assert (elsewhere.outcome, elsewhere.answer["reason"]) == (
        "ignored",
        "ignored: push to refs/heads/dev",
    )


# --- generic -----------------------------------------------------------------------------


def test_a_signed_generic_request_triggers_whatever_its_body() -> None:
    body = b"not json at all"

    verdict = generic({"X-Signature": sign(body)}, body, secret=SECRET, tracked=MAIN)

    assert verdict == WebhookVerdict(
        outcome="triggered",
        status=HTTPStatus.ACCEPTED,
        answer={"triggered": True},
        detail="signed request",
        trigger="webhook:generic",
    )


@pytest.mark.parametrize("signature", [None, "sha256=00", sign(b"other body")])
def test_a_badly_signed_generic_request_is_unauthorized(signature: str | None) -> None:
    headers = {} if signature is None else {"X-Signature": signature}

    verdict = generic(headers, b"x", secret=SECRET, tracked=MAIN)

    assert (verdict.outcome, verdict.trigger) == ("unauthorized", None)
    assert verdict.answer["error"] == (
        "missing or invalid X-Signature header; "
        "expected sha256=<hex HMAC-SHA256 of the raw body, keyed with the secret>"
    )


# --- the pieces --------------------------------------------------------------------------


def test_tracked_refs_cover_a_branch_or_tag_name_and_a_full_ref_exactly() -> None:
    assert tracked_refs("main") == {"refs/heads/main", "refs/tags/main"}
    assert tracked_refs("refs/heads/release") == {"refs/heads/release"}


# HMAC pads short keys with zero bytes, so `other` holds at least one byte that is not zero.
@given(body=st.binary(max_size=256), other=st.binary(min_size=1, max_size=32).filter(any))
def test_a_signature_matches_its_own_body_and_key_only(body: bytes, other: bytes) -> None:
    assert signature_matches(SECRET, body, sign(body))
    assert signature_matches(SECRET, body, " SHA256=" + sign(body)[7:].upper() + " ")
    assert not signature_matches(SECRET, body + other, sign(body))
    assert not signature_matches(SECRET + other, body, sign(body))


def test_a_token_matches_only_itself() -> None:
    assert token_matches(SECRET, SECRET.decode())
    assert not token_matches(SECRET, None)
    assert not token_matches(SECRET, SECRET.decode().upper())


def test_json_object_reads_the_form_field_only_for_forms() -> None:
    form = urlencode({"payload": '{"a": 1}'}).encode()

    assert json_object(
        form, content_type="application/x-www-form-urlencoded; charset=utf-8", form_field="payload"
    ) == {"a": 1}
    with pytest.raises(NotAJsonObject, match="not valid JSON"):
        json_object(form, content_type="application/json", form_field="payload")
    with pytest.raises(NotAJsonObject, match="not valid JSON"):
        json_object(form, content_type="application/x-www-form-urlencoded")


def test_the_hooks_and_outcomes_are_the_metric_label_values() -> None:
    assert tuple(HOOKS) == WEBHOOK_HOOKS
    assert OUTCOMES == WEBHOOK_OUTCOMES
    triggered = [
        from_github(push("refs/heads/main")).trigger,
        generic({"X-Signature": sign(b"")}, b"", secret=SECRET, tracked=MAIN).trigger,
    ]
    assert {trigger_source(str(source)) for source in triggered} == {"webhook"}


# --- what the transport refuses before a webhook sees the body ------------------------------


def headers_of(*pairs: tuple[str, str]) -> Message:
    message = Message()
    for name, value in pairs:
        message[name] = value
    return message


@pytest.mark.parametrize(
    ("pairs", "status"),
    [
        ((("Content-Length", "1025"),), HTTPStatus.REQUEST_ENTITY_TOO_LARGE),
        ((("Transfer-Encoding", "chunked"),), HTTPStatus.LENGTH_REQUIRED),
        ((("Transfer-Encoding", "chunked"), ("Content-Length", "3")), HTTPStatus.BAD_REQUEST),
        ((("Content-Length", "3"), ("Content-Length", "4")), HTTPStatus.BAD_REQUEST),
        ((("Content-Length", "-1"),), HTTPStatus.BAD_REQUEST),
        ((("Content-Length", "１２"),), HTTPStatus.BAD_REQUEST),  # non-ASCII digits
    ],
)
def test_the_transport_refuses_oversize_and_ill_framed_bodies(
    pairs: tuple[tuple[str, str], ...], status: HTTPStatus
) -> None:
    refusal = body_refusal(body_framing(headers_of(*pairs)), limit=1024)

    assert refusal is not None
    assert refusal[0] == status


def test_the_transport_reads_bodies_within_the_limit() -> None:
    assert body_refusal(body_framing(headers_of(("Content-Length", "1024"))), limit=1024) is None
    assert body_refusal(body_framing(headers_of()), limit=1024) is None
    assert body_refusal(body_framing(headers_of(("Content-Length", "1025"))), limit=1024) == (
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        "request body of 1025 bytes is over the limit of 1024 bytes",
    )
