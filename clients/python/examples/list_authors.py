"""Every author, page after page, as a person's script: the password grant.

    uv run python clients/python/examples/list_authors.py [search]

Environment: GATEHOUSE_URL (default http://localhost:8080), GATEHOUSE_USER and
GATEHOUSE_PASSWORD (default the development user `viewer`).
"""

from __future__ import annotations

import asyncio
import os
import sys

from gatehouse_client import GatehouseClient, KeycloakTokens


async def main(search: str | None) -> None:
    url = os.environ.get("GATEHOUSE_URL", "http://localhost:8080")
    user = os.environ.get("GATEHOUSE_USER", "viewer")
    password = os.environ.get("GATEHOUSE_PASSWORD", f"{user}-dev-password")
    tokens = KeycloakTokens.password(
        f"{url}/auth/realms/gatehouse", "gatehouse-web", user, password
    )
    async with GatehouseClient(url, tokens) as client:
        async for author in client.iter_authors(search=search):
            print(f"{author.id}\t{author.name}")
    await tokens.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else None))
