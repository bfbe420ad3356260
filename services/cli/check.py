"""`a4co check`: the saga's invariants (docs/saga.md) as SQL over the services' schemas.

Over a running deployment only the orders that have settled are checked: those unchanged for
`settled_for_s` (60 s by default, longer than any saga step's 30 s timeout and its compensations),
and the outbox rows older than that. With 0, every order and row is checked, which holds only once
the system is quiet (no event in flight): the saga and end-to-end tests call it so after each
scenario.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Annotated

import asyncpg
import typer
from rich.console import Console
from rich.markup import escape

from services.cli.connection import (
    DatabaseUnansweredError,
    Prefix,
    Target,
    database,
    database_shown,
    running_deployment,
)
from services.platform.events.topology import Topology

console = Console()
DEFAULT_SETTLED_S = 60.0
DEFAULT_TIMEOUT_S = 60.0  # how long each statement may wait for its answer
STANDING = "('CONFIRMED', 'SHIPPED', 'DELIVERED', 'RETURN_REQUESTED')"  # charged and not refunded
UNDONE = "('CANCELLED', 'RETURNED')"


async def violations(dsn: str, topology: Topology, settled_for_s: float = 0.0) -> list[str]:
    """Every invariant that does not hold over the orders unchanged for `settled_for_s`."""
    found, _ = await check(dsn, topology, settled_for_s)
    return found


async def check(
    dsn: str, topology: Topology, settled_for_s: float, timeout_s: float = DEFAULT_TIMEOUT_S
) -> tuple[list[str], int]:
    """What is violated, and how many orders were checked; DatabaseUnansweredError when a statement
    waits longer than `timeout_s` for its answer."""
    orders, payments, inventory = (f'"{topology.schema(s)}"' for s in ("orders", "payments", "inventory"))
    # $1: the seconds an order (or an outbox row) has been unchanged for before it is checked.
    settled = "updated_at <= now() - make_interval(secs => $1)"
    recent = f"SELECT order_id::text FROM {orders}.orders WHERE NOT ({settled})"
    found: list[str] = []
    async with database(dsn, timeout_s, connect_timeout_s=5) as conn:
        # One snapshot for every statement: a live system moves on between them.
        await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        checked = await conn.fetchval(f"SELECT count(*) FROM {orders}.orders WHERE {settled}", settled_for_s)
        # No customer charged for an order that is not standing without being refunded (a returned
        # order is refunded; one whose return is asked for is not yet).
        charged = await conn.fetchval(
            f"SELECT coalesce(sum(amount_cents), 0) FROM {payments}.payments"
            f" WHERE status = 'succeeded' AND order_id NOT IN ({recent})",
            settled_for_s,
        )
        refunded_ok = await conn.fetchval(
            f"SELECT count(*) FROM {payments}.payments"
            f" WHERE status = 'refunded' AND refunded_cents <> amount_cents AND order_id NOT IN ({recent})",
            settled_for_s,
        )
        standing = await conn.fetchval(
            f"SELECT coalesce(sum(total_cents), 0) FROM {orders}.orders"
            f" WHERE status IN {STANDING} AND {settled}",
            settled_for_s,
        )
        if charged != standing:
            found.append(f"charges - refunds = {charged} but confirmed totals = {standing}")
        if refunded_ok:
            found.append(f"{refunded_ok} refunds differ from their charge")
        # No product is oversold: what is reserved is what is held for orders, never beyond stock
        # (inventory writes both in one transaction, so this holds at every moment).
        oversold = await conn.fetch(
            "SELECT s.product_id, s.on_hand, s.reserved,"
            " coalesce(sum(r.quantity) FILTER (WHERE r.status = 'held'), 0) AS held"
            f" FROM {inventory}.stock s LEFT JOIN {inventory}.reservations r USING (product_id)"
            " GROUP BY s.product_id"
            " HAVING s.reserved <> coalesce(sum(r.quantity) FILTER (WHERE r.status = 'held'), 0)"
            " OR s.reserved > s.on_hand OR s.on_hand < 0"
        )
        found += [
            f"stock of {r['product_id']}: on hand {r['on_hand']}, reserved {r['reserved']}, held {r['held']}"
            for r in oversold
        ]
        # Confirmed orders hold their stock; cancelled ones hold none.
        leaks = await conn.fetch(
            f"SELECT o.order_id, o.status FROM {orders}.orders o JOIN {inventory}.reservations r"
            " ON r.order_id = o.order_id::text"
            f" WHERE r.status = 'held' AND o.status NOT IN ('CONFIRMED', 'SHIPPED') AND o.{settled}",
            settled_for_s,
        )
        found += [f"order {r['order_id']} is {r['status']} but still holds stock" for r in leaks]
        # Every order reaches a state that waits for no saga step.
        stuck = await conn.fetch(
            f"SELECT order_id, status FROM {orders}.orders WHERE status IN ('PENDING', 'PAID') AND {settled}",
            settled_for_s,
        )
        found += [f"order {r['order_id']} is stuck in {r['status']}" for r in stuck]
        # An order's points (decision 54) are spent while it stands and given back once it is undone.
        loyalty = f'"{topology.schema("loyalty")}"'
        schemas = [orders, payments, inventory]
        if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{loyalty}.redemptions"):
            schemas.append(loyalty)
            unsettled = await conn.fetch(
                f"SELECT o.order_id, o.status, r.status AS points FROM {orders}.orders o"
                f" LEFT JOIN {loyalty}.redemptions r ON r.order_id = o.order_id::text"
                f" WHERE o.points_redeemed > 0 AND o.{settled} AND ("
                f"  (o.status IN {STANDING} AND r.status IS DISTINCT FROM 'redeemed')"
                f"  OR (o.status IN {UNDONE} AND r.status = 'redeemed'))",
                settled_for_s,
            )
            found += [
                f"order {r['order_id']} is {r['status']} but its points are {r['points'] or 'not asked for'}"
                for r in unsettled
            ]
        # No committed state change loses its event: no outbox row outlives the settling time.
        for schema in schemas:
            pending = await conn.fetchval(
                f"SELECT count(*) FROM {schema}.outbox WHERE created_at <= now() - make_interval(secs => $1)",
                settled_for_s,
            )
            if pending:
                found.append(f"{pending} events never left the outbox of {schema}")
    return found, int(checked)


def database_url(flag: str | None) -> str:
    """The flag, then `A4CO_DATABASE_URL`, then what `make run` wrote of the running deployment."""
    url = (
        flag
        or os.environ.get("A4CO_DATABASE_URL")
        or running_deployment().get("servers", {}).get("A4CO_DATABASE_URL")
    )
    if not url:
        raise typer.BadParameter(
            "no database: start the marketplace with `make run`, or point --database-url or"
            " A4CO_DATABASE_URL at its PostgreSQL"
        )
    return str(url)


def invariants(
    settled_for: Annotated[
        float, typer.Option(help="seconds an order has been unchanged for before it is checked", min=0)
    ] = DEFAULT_SETTLED_S,
    url: Annotated[str | None, typer.Option("--database-url")] = None,
    prefix: Prefix = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    timeout: Annotated[
        float, typer.Option(help="seconds each statement may wait for PostgreSQL's answer", min=0.001)
    ] = DEFAULT_TIMEOUT_S,
) -> None:
    """Whether money, stock, points and outboxes add up for every settled order; exit 1 if not."""
    topology = Target.resolve(None, prefix).topology
    dsn = database_url(url)
    try:
        found, checked = asyncio.run(check(dsn, topology, settled_for, timeout))
    except DatabaseUnansweredError as error:
        console.print(
            f"[red]PostgreSQL at {escape(database_shown(dsn))} stopped answering the check ({error}):"
            " is it stalled or overloaded? --timeout waits longer[/red]"
        )
        raise typer.Exit(2) from None
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
        console.print(
            f"[red]the database has no schema {topology.schema('orders')}: is the deployment running"
            " (its services make their schemas), and is its prefix --prefix / A4CO_PREFIX?[/red]"
        )
        raise typer.Exit(2) from None
    except (OSError, TimeoutError, asyncpg.CannotConnectNowError) as error:
        why = escape(str(error) or type(error).__name__)
        console.print(
            f"[red]cannot reach PostgreSQL at {escape(database_shown(dsn))} ({why}): start the marketplace with"
            " `make run`, or point --database-url or A4CO_DATABASE_URL at a running server[/red]"
        )
        raise typer.Exit(2) from None
    except asyncpg.PostgresError as error:  # it answered, and refused: the user, its rights
        console.print(
            f"[red]PostgreSQL at {escape(database_shown(dsn))} refused the check: {escape(str(error))}[/red]"
        )
        raise typer.Exit(2) from None
    if as_json:
        report = {"violations": found, "orders_checked": checked, "settled_for_s": settled_for}
        typer.echo(json.dumps(report, indent=2))
        raise typer.Exit(1 if found else 0)
    over = f"over {checked} order{'s' * (checked != 1)} unchanged for {settled_for:g} s"
    if found:
        for violation in found:
            console.print(f"[red]✗[/red] {violation}")
        console.print(f"{len(found)} violation{'s' * (len(found) != 1)} {over}")
        raise typer.Exit(1)
    console.print(f"every invariant holds {over}")
