"""Failures of PostgreSQL or Redis themselves, as opposed to failures of a statement or command.

An RPC that meets one is answered UNAVAILABLE (the caller may retry later); an event handler that
meets one keeps its event until the database answers again, or takes writes again
(`events/consumer.py`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import asyncpg
import redis.exceptions
from redis.commands.core import AsyncScript

# Redis answering but refusing to write, by its reply's code: full (`maxmemory` reached, no
# eviction) or a replica (a primary demoted by a failover). A script's refused write raises one
# too (`run_script`).
_REDIS_REFUSALS_BY_CODE: dict[str, type[redis.exceptions.ResponseError]] = {
    "OOM": redis.exceptions.OutOfMemoryError,
    "READONLY": redis.exceptions.ReadOnlyError,
}
REDIS_REFUSALS: tuple[type[BaseException], ...] = tuple(_REDIS_REFUSALS_BY_CODE.values())

# Redis's alone: a service whose Redis holds copies (caches, indexes) of what PostgreSQL holds
# may answer from PostgreSQL instead (services/platform/stale.py).
REDIS_OUTAGES: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    *REDIS_REFUSALS,
)

# PostgreSQL answering but refusing to write: class 53 (its disk full, out of memory, too many
# connections, a configured limit reached) and 25006 (read-only: a standby, a server that failed
# over under the pool, `default_transaction_read_only`). No request or event is at fault, and
# `SELECT 1` still answers, so a consumer waits by trying its event again (events/consumer.py).
DATABASE_REFUSALS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
)

# PostgreSQL rolled the transaction back for a conflict with a concurrent one (class 40: a deadlock,
# a serialization failure): it changed nothing and may be tried again at once. An RPC answers it
# ABORTED; a consumer tries its event again on the same delivery (events/consumer.py).
DATABASE_CONFLICTS: tuple[type[BaseException], ...] = (asyncpg.exceptions.TransactionRollbackError,)

DEPENDENCY_OUTAGES: tuple[type[BaseException], ...] = (
    *REDIS_OUTAGES,
    *DATABASE_REFUSALS,
    # Class 08 (connection exceptions), asyncpg's connection lost under a query among them.
    asyncpg.exceptions.PostgresConnectionError,
    # Class 57: the server shutting down, starting up, or a statement cancelled.
    asyncpg.exceptions.OperatorInterventionError,
    # A connection the server ended (a fast shutdown ends every session) and is used before its
    # socket's close is seen: "cannot switch to state 12; another operation (2) is in progress".
    # Seen on `make run` with PostgreSQL stopped under orders; asyncpg issue 1069, SQLAlchemy
    # issue 13241 (which treats it as a disconnect). The pool then connects anew.
    asyncpg.exceptions.InternalClientError,
    # The socket's: refused, reset, timed out (asyncpg's connect and the pool's acquire), and over
    # a Unix socket, its file missing while the server is down (FileNotFoundError).
    OSError,
)


# What a loop of its own on one PostgreSQL connection (the outbox relay, the search index's
# follower, the inbox pruning) meets when the server or the connection fails, on connecting or on
# any statement: it connects again and goes on. InternalClientError is the connection the server
# ended mid-statement, used again before asyncpg has seen its socket close (above); a relay
# stopped by it on `make run` when PostgreSQL was killed, and its events waited in the outbox.
DATABASE_FAILURES: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)


# A write refused inside a Lua script, as Redis 6 reports it: wrapped in a plain error
# ("@user_script: 9: -OOM command not allowed when used memory > 'maxmemory'."). Redis 7 reports
# the refusal itself, which the client already raises as its own class.
_REFUSED_IN_SCRIPT = re.compile(f"-({'|'.join(_REDIS_REFUSALS_BY_CODE)}) ")


async def run_script(script: AsyncScript, keys: Sequence[Any], args: Sequence[Any] = ()) -> Any:
    """Run a registered Lua script; a write it had refused raises as Redis's refusal
    (`OutOfMemoryError`, `ReadOnlyError`: among `REDIS_OUTAGES`), not as a script's error."""
    try:
        return await script(keys=list(keys), args=list(args))
    except redis.exceptions.ResponseError as exc:
        refused = _REFUSED_IN_SCRIPT.search(str(exc))
        if refused is None:
            raise
        raise _REDIS_REFUSALS_BY_CODE[refused.group(1)](str(exc)) from exc
