"""The ratelimit service of Gatehouse."""

# Before any module of this package imports grpc: the kit sets gRPC core defaults.
import gatehouse_kit  # noqa: F401
