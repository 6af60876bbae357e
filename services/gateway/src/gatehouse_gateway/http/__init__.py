"""The HTTP side of the gateway: edge middleware, dependencies and routes."""
