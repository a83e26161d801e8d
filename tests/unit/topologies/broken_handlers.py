"""A handler module whose import fails, as a user's module with a bug would."""

raise RuntimeError("boom at import")
