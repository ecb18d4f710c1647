"""Credential plumbing and error messages of the git source, without a remote.

The end-to-end checks (a real HTTPS server with Basic auth, a fake ssh) are in
tests/integration/test_git_source.py; these pin the pieces: what goes on the
command line, what goes in the environment, and what a message may say.
"""

from __future__ import annotations

import base64
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitsync.errors import ConfigError
from gitsync.sources import credentials, revisions
from gitsync.sources.git import (
    DEFAULT_HTTPS_USERNAME,
    FetchResult,
    GitCredentials,
    GitSource,
    SourceError,
    SourceUnavailable,
    auth_environment,
    classify_failure,
    redact_url,
    ssh_command,
)

TOKEN = "glpat-PLANTED-s3cret-9921"  # a planted secret: must never show up in output


def test_credentials_repr_shows_no_secret() -> None:
    creds = GitCredentials(
        https_username="robot", https_token=TOKEN, ssh_key_path=Path("/keys/id_ed25519")
    )
    text = repr(creds)
    assert TOKEN not in text
    assert "robot" not in text
    assert "/keys/id_ed25519" in text  # a path is no secret and helps debugging
    assert TOKEN not in repr(FetchResult(revision="a" * 40, changed=True, tree=Path("/t")))


def test_token_goes_to_the_environment_never_to_arguments(tmp_path: Path) -> None:
    askpass = tmp_path / "git-askpass"
    auth = auth_environment(
        GitCredentials(https_token=TOKEN), askpass_path=askpass, connect_timeout_seconds=30
    )
    assert all(TOKEN not in arg for arg in auth.config_args)
    # The empty helper resets configured helpers: none is asked, none stores the token.
    assert auth.config_args == ("-c", "credential.helper=")
    assert auth.env["GIT_ASKPASS"] == str(askpass)
    assert TOKEN in auth.env.values()
    assert DEFAULT_HTTPS_USERNAME in auth.env.values()
    assert TOKEN not in repr(auth)


def test_explicit_username_replaces_the_default(tmp_path: Path) -> None:
    auth = auth_environment(
        GitCredentials(https_username="oauth2", https_token=TOKEN),
        askpass_path=tmp_path / "askpass",
        connect_timeout_seconds=30,
    )
    assert "oauth2" in auth.env.values()
    assert DEFAULT_HTTPS_USERNAME not in auth.env.values()


def test_without_a_token_no_askpass_is_set(tmp_path: Path) -> None:
    auth = auth_environment(None, askpass_path=tmp_path / "askpass", connect_timeout_seconds=30)
    assert "GIT_ASKPASS" not in auth.env
    assert auth.config_args == ()
    assert "GIT_SSH_COMMAND" in auth.env  # ssh stays strict and prompt-free anyway


def test_askpass_helper_answers_both_prompts_from_its_environment(tmp_path: Path) -> None:
    askpass = tmp_path / "git-askpass"
    askpass.write_text(credentials.ASKPASS_SCRIPT)
    askpass.chmod(0o700)
    auth = auth_environment(
        GitCredentials(https_token=TOKEN), askpass_path=askpass, connect_timeout_seconds=30
    )
    assert TOKEN not in credentials.ASKPASS_SCRIPT

    def ask(prompt: str) -> str:
        done = subprocess.run(
            [str(askpass), prompt], env=dict(auth.env), capture_output=True, text=True, check=True
        )
        return done.stdout

    assert ask("Username for 'https://git.example.test': ") == f"{DEFAULT_HTTPS_USERNAME}\n"
    assert ask("Password for 'https://x-access-token@git.example.test': ") == f"{TOKEN}\n"


def test_ssh_command_checks_host_keys_strictly_with_only_the_given_key() -> None:
    creds = GitCredentials(
        ssh_key_path=Path("/data/keys/deploy key"), known_hosts_path=Path("/data/known hosts")
    )
    words = shlex.split(ssh_command(creds, connect_timeout_seconds=12.4))
    assert words[0] == "ssh"
    options = {words[i + 1] for i, word in enumerate(words) if word == "-o"}
    assert {
        "BatchMode=yes",
        "StrictHostKeyChecking=yes",
        "IdentitiesOnly=yes",
        "UserKnownHostsFile=/data/known hosts",
        "GlobalKnownHostsFile=/dev/null",
        "ConnectTimeout=12",
    } <= options
    assert words[words.index("-i") + 1] == "/data/keys/deploy key"


def test_ssh_command_without_credentials_still_refuses_unknown_hosts() -> None:
    words = shlex.split(ssh_command(None, connect_timeout_seconds=60))
    assert "StrictHostKeyChecking=yes" in words
    assert "BatchMode=yes" in words
    assert "-i" not in words
    assert not any(word.startswith("UserKnownHostsFile") for word in words)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://alice:s3cret@git.example.test/r.git", "https://***@git.example.test/r.git"),
        ("https://tok:with@sign@git.example.test/r.git", "https://***@git.example.test/r.git"),
        ("https://TOKENONLY@git.example.test/r.git", "https://***@git.example.test/r.git"),
        ("https://git.example.test/r.git", "https://git.example.test/r.git"),
        ("git@git.example.test:team/r.git", "git@git.example.test:team/r.git"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_unknown_host_key_message_says_how_to_fix_it() -> None:
    error = classify_failure(
        operation="ls-remote",
        url="git@git.example.test:team/caches.git",
        ref="main",
        stderr=b"Host key verification failed.\r\nfatal: Could not read from remote repository.\n",
        returncode=128,
        known_hosts_path=Path("/etc/gitsync/known_hosts"),
    )
    assert isinstance(error, SourceError)
    message = str(error)
    assert "host key for git.example.test is not in the known_hosts file" in message
    assert "/etc/gitsync/known_hosts" in message
    assert "ssh-keyscan git.example.test >> /etc/gitsync/known_hosts" in message


@pytest.mark.parametrize(
    ("stderr", "error", "words"),
    [
        (b"fatal: Authentication failed for 'https://h/r.git/'\n", SourceError, "refused"),
        (
            b"fatal: could not read Username for 'https://h': terminal prompts disabled\n",
            SourceError,
            "refused",
        ),
        (b"fatal: couldn't find remote ref refs/heads/nope\n", SourceError, "does not exist"),
        (
            b"fatal: unable to access 'https://h/r.git/': Could not resolve host: h\n",
            SourceUnavailable,
            "will retry",
        ),
        (
            b"fatal: unable to access 'https://h/': The requested URL returned error: 503\n",
            SourceUnavailable,
            "will retry",
        ),
        (b"fatal: early EOF\n", SourceUnavailable, "will retry"),
        (b"fatal: something nobody expected\n", SourceError, "something nobody expected"),
    ],
)
def test_failures_are_classified(stderr: bytes, error: type[Exception], words: str) -> None:
    found = classify_failure(
        operation="fetch", url="https://h/r.git", ref="main", stderr=stderr, returncode=128
    )
    assert type(found) is error
    assert words in str(found)


def test_messages_scrub_planted_secrets_in_every_form() -> None:
    """git may echo a URL or a header; the message must not."""
    basic = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    src = GitSource(
        url="https://git.example.test/team/caches.git",
        cache_dir=Path("/nonexistent/cache"),
        credentials=GitCredentials(https_token=TOKEN),
    )
    stderr = (
        "remote: an earlier line\n"
        f"error: token {TOKEN}, header Basic {basic}\n"
        f"fatal: Authentication failed for 'https://bob:hunter2@git.example.test/t.git'\n"
    ).encode()
    message = str(
        classify_failure(
            operation="fetch",
            url="https://bob:hunter2@git.example.test/t.git",
            ref="main",
            stderr=stderr,
            returncode=128,
            scrub=src._scrub,
        )
    )
    assert "header Basic ***" in message  # the line was kept, only the secrets went
    for secret in (TOKEN, basic, "hunter2", "bob:"):
        assert secret not in message


def test_a_secret_in_the_url_never_shows_in_repr_or_url() -> None:
    src = GitSource(
        url=f"https://robot:{TOKEN}@git.example.test/team/caches.git", cache_dir=Path("/x")
    )
    assert TOKEN not in repr(src)
    assert src.url == "https://git.example.test/team/caches.git"


def test_local_paths_are_made_absolute_and_scp_addresses_are_not_paths(tmp_path: Path) -> None:
    assert GitSource(url="specs", cache_dir=tmp_path).url == str(Path("specs").absolute())
    scp = "git@git.example.test:team/caches.git"
    assert GitSource(url=scp, cache_dir=tmp_path).url == scp


@pytest.mark.parametrize(
    "ref", ["--upload-pack=touch /tmp/pwned", "a..b", "with space", "", "main.lock", "x:y", "end/"]
)
def test_invalid_refs_are_config_errors(ref: str) -> None:
    with pytest.raises(ConfigError, match="not a valid git ref"):
        GitSource(url="https://git.example.test/r.git", ref=ref, cache_dir=Path("/x"))


@pytest.mark.parametrize("path", ["../outside", "/etc", "a/../../b"])
def test_paths_outside_the_repository_are_config_errors(path: str) -> None:
    with pytest.raises(ConfigError, match="inside the repository"):
        GitSource(url="https://git.example.test/r.git", path=path, cache_dir=Path("/x"))


def test_option_like_urls_and_bad_timeouts_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="not a git URL"):
        GitSource(url="--upload-pack=evil", cache_dir=Path("/x"))
    with pytest.raises(ConfigError, match="positive"):
        GitSource(url="https://h/r.git", cache_dir=Path("/x"), timeout_seconds=0)


@pytest.mark.parametrize(
    "url", ["http://git.example.test/r.git", "http://10.0.0.7/r.git", f"http://u:{TOKEN}@h/r.git"]
)
def test_a_token_is_never_sent_over_plain_http_beyond_loopback(url: str) -> None:
    with pytest.raises(ConfigError, match="clear text") as caught:
        GitSource(url=url, cache_dir=Path("/x"), credentials=GitCredentials(https_token=TOKEN))
    assert TOKEN not in str(caught.value)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/r.git", "http://[::1]/r.git", "https://h/r"]
)
def test_loopback_http_and_https_may_carry_a_token(url: str) -> None:
    src = GitSource(url=url, cache_dir=Path("/x"), credentials=GitCredentials(https_token=TOKEN))
    assert src.url == url


class _Entry:
    """The part of a GitPython tree entry `write_tree` reads, for names no parser lets by."""

    def __init__(self, name: str, path: str) -> None:
        self.name, self.path, self.type, self.mode = name, path, "blob", 0o100644

    def __iter__(self) -> Iterator[_Entry]:
        return iter([self])


@pytest.mark.parametrize("name", ["..", ".", ".git", ".Git", "a/b", "nul\0byte"])
def test_tree_entries_git_never_checks_out_are_refused_before_any_write(
    tmp_path: Path, name: str
) -> None:
    # GitPython ≥ 3.2 refuses these while parsing the tree; older ones pass them on.
    with pytest.raises(SourceError, match="refusing to write a path git never checks out"):
        revisions.write_tree(_Entry(name, name), tmp_path)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_gitpython_failures_become_source_errors_without_secrets() -> None:
    import git  # noqa: PLC0415

    failed = git.exc.GitCommandError(
        ["git", "cat-file", "--batch"],
        128,
        f"fatal: unable to read alternate https://bob:{TOKEN}@git.example.test/o.git\n",
    )
    error = revisions.gitpython_failure(failed, what="reading revision 'main' of /repo")
    assert str(error).startswith("reading revision 'main' of /repo failed: fatal: unable to")
    assert TOKEN not in str(error)
    assert "cat-file" not in str(error)  # git's message, not GitPython's command line
    missing = git.exc.GitCommandNotFound(["git"], FileNotFoundError("git"))
    assert "not installed" in str(revisions.gitpython_failure(missing, what="x"))
