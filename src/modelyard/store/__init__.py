"""Persistence: SQL tables through SQLAlchemy 2 (SQLite by default) and blobs on disk."""
