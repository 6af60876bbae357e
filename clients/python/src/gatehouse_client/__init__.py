"""Python client of the Gatehouse platform (docs/sdk.md).

```python
tokens = KeycloakTokens.password(ISSUER, "gatehouse-web", "editor", password)
async with GatehouseClient("http://localhost:8080", tokens) as client:
    author = await client.create_author("Ada Lovelace")
```
"""

from gatehouse_client.backoff import Backoff
from gatehouse_client.errors import (
    AuthenticationFailed,
    Conflict,
    ConnectionLost,
    GatehouseError,
    InternalError,
    InvalidData,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    PreconditionFailed,
    RateLimitExceeded,
    ServiceUnavailable,
    UpstreamTimeout,
    ValidationFailed,
)
from gatehouse_client.http import GatehouseClient
from gatehouse_client.models import Author, Page, PageMeta
from gatehouse_client.tokens import (
    AuthorizationRequest,
    KeycloakTokens,
    StaticToken,
    TokenProvider,
    authorization_request,
)
from gatehouse_client.websocket import AuthorChange, Change, GatehouseSocket, Resync

__all__ = [
    "AuthenticationFailed",
    "Author",
    "AuthorChange",
    "AuthorizationRequest",
    "Backoff",
    "Change",
    "Conflict",
    "ConnectionLost",
    "GatehouseClient",
    "GatehouseError",
    "GatehouseSocket",
    "InternalError",
    "InvalidData",
    "KeycloakTokens",
    "NotFound",
    "Page",
    "PageMeta",
    "PayloadTooLarge",
    "PermissionDenied",
    "PreconditionFailed",
    "RateLimitExceeded",
    "Resync",
    "ServiceUnavailable",
    "StaticToken",
    "TokenProvider",
    "UpstreamTimeout",
    "ValidationFailed",
    "authorization_request",
]
