"""Write transactions on SQLite connections in autocommit mode (``isolation_level=None``), and the columns of a
table (which a store made by an earlier version may lack)."""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE (another writer waits for this one, up to the connection's timeout), COMMIT at the
    end of the block, ROLLBACK when it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def table_columns(conn: sqlite3.Connection, table: str) -> set[str]:
    """The names of the columns ``table`` has (none when it does not exist)."""
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
