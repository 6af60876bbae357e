"""The ratelimit service of Gatehouse."""
