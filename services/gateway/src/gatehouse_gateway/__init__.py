"""The public HTTP and WebSocket edge of Gatehouse."""

# Before any module of this package imports grpc: the kit sets gRPC core defaults.
import gatehouse_kit  # noqa: F401
