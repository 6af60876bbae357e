"""Print every author change as it happens, across reconnects (recovered by offset);
reload the list only after a history gap.

    uv run python clients/python/examples/watch_authors.py

Runs until interrupted. Environment as in list_authors.py.
"""

from __future__ import annotations

import asyncio
import os

from gatehouse_client import AuthorChange, GatehouseClient, GatehouseSocket, KeycloakTokens


async def main() -> None:
    url = os.environ.get("GATEHOUSE_URL", "http://localhost:8080")
    user = os.environ.get("GATEHOUSE_USER", "viewer")
    password = os.environ.get("GATEHOUSE_PASSWORD", f"{user}-dev-password")
    tokens = KeycloakTokens.password(
        f"{url}/auth/realms/gatehouse", "gatehouse-web", user, password
    )
    async with GatehouseClient(url, tokens) as client, GatehouseSocket(url, tokens) as socket:
        await socket.subscribe()
        known = {author.id: author async for author in client.iter_authors()}
        print(f"{len(known)} authors; watching")
        async for change in socket.changes():
            if isinstance(change, AuthorChange):
                if change.kind == "deleted":
                    known.pop(change.author.id, None)
                else:
                    known[change.author.id] = change.author
                print(f"{change.kind}\t{change.author.id}\t{change.author.name}")
            else:
                # A history gap: the changes in it are lost to this client, reload.
                known = {author.id: author async for author in client.iter_authors()}
                print(f"{change.reason}; reloaded {len(known)} authors")
    await tokens.aclose()


if __name__ == "__main__":
    asyncio.run(main())
