"""Storage backends: the embedded SQLite store (default) and MongoDB."""

from __future__ import annotations

from .base import Backend


def open_backend(settings) -> Backend:
    """The backend the settings ask for: MongoDB when a URI is configured, the embedded store otherwise."""
    if settings["storage.mongodb_uri"]:
        from .mongodb import MongoBackend

        return MongoBackend.connect(
            settings["storage.mongodb_uri"],
            settings["storage.mongodb_database"],
            settings["storage.indexed_attributes"],
        )
    from .sqlite import SQLiteBackend

    return SQLiteBackend(settings.data_dir, settings["storage.indexed_attributes"])
