"""Helpers shared by test folders (import as `support.<module>`: `tests/` is on sys.path)."""
