"""Opaque, signed listing cursors.

A cursor carries the id of the last author a page returned and a digest of the
listing's filter, signed with HMAC-SHA256 under the service's secret. A cursor
that was altered, forged, or is presented with a different filter is refused,
so a client can neither guess positions nor splice one listing's cursor into another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import struct

from gatehouse_authors.domain import AuthorFilter
from gatehouse_kit.errors import InvalidArgument

_VERSION = 1
# version, last id, filter digest
_LAYOUT = struct.Struct(">BQ8s")
_MAC_BYTES = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    # validate=True: characters outside the alphabet are errors, not silently skipped.
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def filter_digest(author_filter: AuthorFilter) -> bytes:
    """A short fingerprint of a filter, equal for equal filters."""
    canonical = json.dumps(
        [author_filter.id, author_filter.name, author_filter.search], separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).digest()[:8]


class CursorCodec:
    """Encodes and checks cursors under one secret."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, last_id: int, author_filter: AuthorFilter) -> str:
        """The cursor of the position after `last_id` in the listing `author_filter` selects."""
        payload = _LAYOUT.pack(_VERSION, last_id, filter_digest(author_filter))
        return _b64(payload + self._mac(payload))

    def decode(self, cursor: str, author_filter: AuthorFilter) -> int:
        """The last id `cursor` carries; `InvalidArgument` if it is malformed or not ours."""
        refused = InvalidArgument(
            "invalid cursor", [("cursor.cursor", "is not a cursor this listing issued")]
        )
        try:
            raw = _unb64(cursor)
        except (binascii.Error, ValueError):
            raise refused from None
        # Only the one canonical spelling is accepted (base64 has spare bits and aliases).
        if len(raw) != _LAYOUT.size + _MAC_BYTES or _b64(raw) != cursor:
            raise refused
        payload, mac = raw[: _LAYOUT.size], raw[_LAYOUT.size :]
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise refused
        version, last_id, digest = _LAYOUT.unpack(payload)
        if version != _VERSION or not hmac.compare_digest(digest, filter_digest(author_filter)):
            raise refused
        return int(last_id)
