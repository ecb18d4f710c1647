"""How a git call authenticates, and how its secrets stay out of argv, files and messages.

Credentials never reach an argument list (visible in `ps`) or a file:

* an HTTPS token is answered to git's password prompt by a tiny askpass script
  (`GIT_ASKPASS`) that prints an environment variable set on that one git
  process only; configured credential helpers are switched off for the call so
  none of them stores the token. `https://user:secret@host/…` in the URL is
  moved out of the URL the same way. The default user name is
  `x-access-token`: GitHub accepts it for personal and app tokens, GitLab and
  Gitea for personal, project and group tokens (any non-empty name works there);
  GitLab OAuth tokens need `oauth2` and Bitbucket `x-token-auth`, set explicitly.
  A token is refused for a plain `http://` remote, except on loopback.
* SSH runs as `ssh -i KEY -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes
  -o UserKnownHostsFile=FILE -o BatchMode=yes`: an unknown or changed host key
  fails with a message naming the host and the file, never a prompt.
* every message that may carry git's output goes through a scrubber that
  removes the token, its encoded forms and any `scheme://user:pass@` userinfo.
"""

from __future__ import annotations

import base64
import re
import shlex
import stat
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gitsync.errors import ConfigError
from gitsync.netaddr import is_loopback_host
from gitsync.sources.base import SourceError

# See the module docstring for why this name; override with GitCredentials.https_username.
DEFAULT_HTTPS_USERNAME = "x-access-token"

_USERNAME_ENV = "GITSYNC_GIT_USERNAME"
_PASSWORD_ENV = "GITSYNC_GIT_PASSWORD"  # noqa: S105  # the variable's name, not a password
ASKPASS_SCRIPT = f"""#!/bin/sh
# gitsync askpass helper: git runs this to answer its credential prompts. It holds
# no secret: it prints variables set on that one git process only.
case "$1" in
  Username*) printf '%s\\n' "${_USERNAME_ENV}" ;;
  *) printf '%s\\n' "${_PASSWORD_ENV}" ;;
esac
"""
# Greedy up to the last "@" before the path: a password may hold a raw "@".
_USERINFO_RE = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/\s'\"]+)@")


@dataclass(frozen=True, slots=True)
class GitCredentials:
    """How to authenticate to the remote; every field is optional.

    The cli reads the values from files or the environment and passes them in.
    The user name and token are left out of `repr`, so logging this object, or
    an object holding it, shows no secret.
    """

    https_username: str | None = field(default=None, repr=False)  # DEFAULT_HTTPS_USERNAME
    https_token: str | None = field(default=None, repr=False)
    ssh_key_path: Path | None = None
    known_hosts_path: Path | None = None


@dataclass(frozen=True, slots=True)
class GitAuth:
    """What one network git call gets for authentication: config flags and environment."""

    config_args: tuple[str, ...]  # `-c` pairs, never secret: they go on the command line
    env: Mapping[str, str] = field(repr=False)  # may hold the token: for that process only


# ---------------------------------------------------------------- scrubbing


def redact_url(url: str) -> str:
    """`url` with any `user:password@` userinfo replaced, safe to log and show in status."""
    return _USERINFO_RE.sub(lambda m: f"{m['scheme']}***@", url)


class Scrubber:
    """Removes known secrets, in every form git might print them, from a text."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if secret:
                forms.update({secret, urllib.parse.quote(secret, safe="")})
        self._forms = sorted(forms, key=len, reverse=True)  # longest first: no partial leftovers

    def __call__(self, text: str) -> str:
        for form in self._forms:
            text = text.replace(form, "***")
        return redact_url(text)


def split_userinfo(url: str) -> tuple[str, str | None, str | None]:
    """(url without userinfo, user, password) for `scheme://user:pass@host/…` URLs."""
    match = _USERINFO_RE.match(url)
    if match is None:
        return url, None, None
    user, _, password = match["userinfo"].partition(":")
    bare = match["scheme"] + url[match.end() :]
    return (
        bare,
        urllib.parse.unquote(user) or None,
        urllib.parse.unquote(password) if password else None,
    )


def remote_credentials(
    url: str, credentials: GitCredentials | None
) -> tuple[str, GitCredentials | None, Scrubber]:
    """The URL to give git, the credentials to use with it, and what scrubs their secrets.

    A secret written into an http(s) URL (`https://user:token@…`, or the token
    alone as `https://token@…`) moves to the askpass channel, so it never lands
    in argv or .git/config; explicit credentials win over it. An ssh URL keeps
    its user name (no secret; ssh needs it). A token is refused for plain http
    except on loopback.
    """
    bare_url, url_user, url_password = split_userinfo(url)
    if url.lower().startswith(("http://", "https://")) and url_user:
        if not (credentials and credentials.https_token):
            base = credentials or GitCredentials()
            credentials = GitCredentials(
                https_username=url_user if url_password else base.https_username,
                https_token=url_password or url_user,
                ssh_key_path=base.ssh_key_path,
                known_hosts_path=base.known_hosts_path,
            )
    else:
        bare_url = url
    if credentials and credentials.https_token and is_clear_text_remote(bare_url):
        raise ConfigError(
            f"{redact_url(bare_url)}: a token would travel in clear text over plain http; "
            "use an https:// URL (plain http is allowed only on loopback, 127.0.0.0/8 or ::1)"
        )
    # What messages must never show: userinfo the URL carried (git never gets it,
    # but a message could quote the URL), the token, and its Basic-auth encoding.
    secrets: list[str | None] = [url_password or url_user] if bare_url != url else []
    if credentials and credentials.https_token:
        user = credentials.https_username or DEFAULT_HTTPS_USERNAME
        basic = f"{user}:{credentials.https_token}".encode()
        secrets += [credentials.https_token, base64.b64encode(basic).decode()]
    return bare_url, credentials, Scrubber(secrets)


def is_clear_text_remote(url: str) -> bool:
    """A plain-http URL to a host other than loopback: no place for a token."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme.lower() != "http":
        return False
    return not is_loopback_host(parsed.hostname or "")


# ---------------------------------------------------------------- what git gets


def ssh_command(credentials: GitCredentials | None, *, connect_timeout_seconds: float) -> str:
    """The GIT_SSH_COMMAND for a fetch: strict host keys, no prompts, only the given key.

    git runs it through a shell, so every path is quoted.
    """
    parts = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
    parts += ["-o", f"ConnectTimeout={max(1, round(connect_timeout_seconds))}"]
    if credentials is not None and credentials.ssh_key_path is not None:
        parts += ["-i", str(credentials.ssh_key_path), "-o", "IdentitiesOnly=yes"]
    if credentials is not None and credentials.known_hosts_path is not None:
        # Only the given file counts, so the error message can name the one file to fix.
        parts += ["-o", f"UserKnownHostsFile={credentials.known_hosts_path}"]
        parts += ["-o", "GlobalKnownHostsFile=/dev/null"]
    return shlex.join(parts)


def auth_environment(
    credentials: GitCredentials | None,
    *,
    askpass_path: Path,
    connect_timeout_seconds: float,
) -> GitAuth:
    """Config flags and environment for one network git call (ls-remote, fetch)."""
    env = {
        "GIT_SSH_COMMAND": ssh_command(credentials, connect_timeout_seconds=connect_timeout_seconds)
    }
    config: tuple[str, ...] = ()
    if credentials is not None and credentials.https_token:
        env.update(
            {
                "GIT_ASKPASS": str(askpass_path),
                _USERNAME_ENV: credentials.https_username or DEFAULT_HTTPS_USERNAME,
                _PASSWORD_ENV: credentials.https_token,
            }
        )
        # An empty value resets the helper list: no configured helper is asked, and
        # none is told to store (approve) the token after a successful fetch.
        config = ("-c", "credential.helper=")
    return GitAuth(config_args=config, env=env)


def write_askpass(path: Path) -> None:
    """Install the askpass helper at `path`, unless it is there already; it holds no secret."""
    try:
        if path.is_file() and path.read_text() == ASKPASS_SCRIPT:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".tmp")
        partial.write_text(ASKPASS_SCRIPT)
        partial.chmod(stat.S_IRWXU)  # executable for git, readable by us only
        partial.replace(path)
    except OSError as exc:
        raise SourceError(
            f"cannot write the git askpass helper {path}: {exc.strerror}; "
            "the data dir must be writable and allow executables"
        ) from exc
