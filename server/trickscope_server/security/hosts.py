"""The Host check that defeats DNS rebinding, and what counts as a loopback bind.

A rebinding attack points a name the attacker owns at this server's address, so the victim's
browser sends ``Host: attacker.example`` while the page is same-origin with the server. Requests
naming the server by a loopback name, an IP literal (a rebinding page cannot produce one: the
browser would see it as another origin), the bind host or a configured name are accepted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def host_name(header: str) -> str:
    """The name part of a ``Host`` header: no port, no IPv6 brackets, lowercase, no final dot."""
    value = header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        name = value[1:end] if end > 0 else value[1:]
    elif value.count(":") == 1:
        name = value.split(":", 1)[0]
    else:
        name = value  # a bare name, or an unbracketed IPv6 literal
    return name.rstrip(".")


def _is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def is_loopback_bind(host: str) -> bool:
    """Whether a server bound to ``host`` can only be reached from this machine."""
    name = host_name(host)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class HostPolicy:
    """Accepts the ``Host`` headers under which this server may be addressed."""

    def __init__(self, *, allowed_hosts: Iterable[str], bind_host: str) -> None:
        names = {host_name(name) for name in allowed_hosts if name.strip()}
        self.any_host = "*" in names
        self.configured = frozenset(names - {"*"})
        bind = host_name(bind_host)
        if bind and not _is_ip_literal(bind):
            names.add(bind)
        self.names = frozenset(names | LOOPBACK_NAMES)

    def allows(self, header: str | None) -> bool:
        """Whether a request carrying this ``Host`` header (None: none sent) may proceed."""
        if header is None or self.any_host:
            return True  # browsers always send Host: a request without one is not a rebinding
        name = host_name(header)
        return name in self.names or _is_ip_literal(name)

    def trusts_origin(self, origin: str) -> bool:
        """Whether a browser ``Origin`` names this server by a configured name.

        Behind a reverse proxy that rewrites ``Host`` (to ``127.0.0.1:8000``, say) the browser's
        origin is the public name, which the operator lists in ``allowed_hosts``.
        """
        name = urlsplit(origin).hostname
        return name is not None and host_name(name) in self.configured
