"""The authors service of Gatehouse."""
