"""Who the client is, network-wise: X-Forwarded-For is believed only from trusted proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """The proxies (e.g. Traefik) whose X-Forwarded-For header is believed."""

    def __init__(self, networks: Iterable[str]) -> None:
        self._networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in networks
        )

    def trusts(self, address: str) -> bool:
        """Whether `address` is one of the trusted proxies."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._networks)

    def client_ip(self, peer: str | None, forwarded_for: str | None) -> str:
        """The client's address for limits and audit.

        From a trusted peer, walk X-Forwarded-For from the right (the hop nearest to
        us) past trusted proxies; the first untrusted address is the client. From
        anyone else the header is ignored: the peer is the client.
        """
        if peer is None:
            return ""
        if not forwarded_for or not self.trusts(peer):
            return peer
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        for hop in reversed(hops):
            if not _is_ip(hop):
                # A malformed entry: nothing left of it can be believed.
                return peer
            if not self.trusts(hop):
                return hop
        return hops[0] if hops else peer


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
