"""A service's own identity: the client-credentials grant of a confidential client.

    GATEHOUSE_CLIENT_SECRET=... uv run python clients/python/examples/service_reader.py

The realm's `gatehouse-service` client (development secret in docs/operations.md) may
read authors and nothing else; a write is refused with PermissionDenied.
"""

from __future__ import annotations

import asyncio
import os

from gatehouse_client import GatehouseClient, KeycloakTokens, PermissionDenied


async def main() -> None:
    url = os.environ.get("GATEHOUSE_URL", "http://localhost:8080")
    tokens = KeycloakTokens.client_credentials(
        f"{url}/auth/realms/gatehouse",
        os.environ.get("GATEHOUSE_CLIENT_ID", "gatehouse-service"),
        os.environ["GATEHOUSE_CLIENT_SECRET"],
    )
    async with GatehouseClient(url, tokens) as client:
        page = await client.authors_page(per_page=10)
        print(f"{page.meta.total} authors; the first: {[a.name for a in page.items]}")
        try:
            await client.create_author("not allowed")
        except PermissionDenied as refused:
            print(f"writing is refused: {refused.details}")
    await tokens.aclose()


if __name__ == "__main__":
    asyncio.run(main())
