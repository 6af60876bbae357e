"""The audit service of Gatehouse."""
