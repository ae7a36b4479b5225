"""Builds the archive the settings describe: storage, router, quarantine, forward queue, access control."""

from __future__ import annotations

import tomllib
from pathlib import Path

from .archive import ArchiveService, Routing
from .config import ConfigError, Settings
from .forwarding import ForwardQueue, RetryPolicy
from .router import Router, RuleSetRegistry
from .storage import open_backend
from .storage.records import MongoRecords, RecordStore, SQLiteRecords


def open_records(backend) -> RecordStore:
    """Administrative records (rule sets, provenance, quarantine list, forward queue) beside the instances."""
    if hasattr(backend, "db_path"):
        return SQLiteRecords(backend.db_path)
    return MongoRecords(backend.database)


def open_quarantine(backend, settings: Settings):
    """A store of its own, so that quarantined data can never show in a query or a retrieve."""
    if hasattr(backend, "db_path"):
        from .storage.sqlite import SQLiteBackend

        return SQLiteBackend(settings.data_dir / "quarantine")
    from .storage.mongodb import MongoBackend

    database = backend.database
    return MongoBackend(database.client[f"{database.name}_quarantine"])


def load_secrets(settings: Settings) -> dict[str, str]:
    path = settings["routing.secrets_file"]
    if not path:
        return {}
    try:
        table = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"routing.secrets_file: no such file {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"routing.secrets_file {path}: not valid TOML: {exc}") from None
    bad = [k for k, v in table.items() if not isinstance(v, str) or not v]
    if bad:
        raise ConfigError(f"routing.secrets_file {path}: keys must be non-empty strings ({', '.join(bad)})")
    return table


def open_archive(settings: Settings) -> ArchiveService:
    backend = open_backend(settings)
    records = open_records(backend)
    archive = ArchiveService(backend, duplicate_policy=settings.duplicate_policy,
                             document_options=settings.document_options)
    forward = ForwardQueue(records, archive, calling_aet=settings["server.aet"],
                           retry=RetryPolicy(first_delay=settings["forward.retry_first_seconds"],
                                             max_attempts=settings["forward.max_attempts"]))
    archive.routing = Routing(
        router=Router(RuleSetRegistry(records), load_secrets(settings)),
        quarantine=open_quarantine(backend, settings),
        records=records,
        forward=forward,
        on_error=settings["routing.on_error"],
        keep_original_values=settings["routing.keep_original_values"],
    )
    return archive


def close_archive(archive: ArchiveService) -> None:
    archive.backend.close()
    if archive.routing is not None:
        archive.routing.quarantine.close()
        close = getattr(archive.routing.records, "close", None)
        if close:
            close()
