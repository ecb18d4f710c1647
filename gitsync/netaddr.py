"""The loopback test for hosts, shared by the registry client and the git source.

Why one place: both relax a rule on loopback (plain HTTP to a local
registry; a token over plain HTTP to a local git server), and the two must
agree on what loopback is: `localhost`, 127.0.0.0/8 and ::1.
"""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback_host"]


def is_loopback_host(host: str) -> bool:
    """True for `localhost` (any case) and loopback addresses, IPv6 with or without brackets.

    A name other than localhost is not loopback: resolving it would make the
    answer depend on the resolver, and a policy check must not.
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a name, not an address
        return False
