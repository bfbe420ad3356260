"""ARCHITECTURE.md's invariants as one checker: SQL over the services' schemas.

Call it once the system is quiet (no event in flight); it returns what is violated, empty when
everything holds. Saga tests call it, and so will the fault tests.
"""

from __future__ import annotations

import asyncpg

from services.platform.events.topology import Topology


async def violations(dsn: str, topology: Topology) -> list[str]:
    """Every invariant that does not hold right now."""
    orders, payments, inventory = (f'"{topology.schema(s)}"' for s in ("orders", "payments", "inventory"))
    conn = await asyncpg.connect(dsn)
    found: list[str] = []
    try:
        # No customer charged for an order that is not confirmed without being refunded (a returned
        # order is refunded; one whose return is asked for is not yet).
        charged = await conn.fetchval(
            f"SELECT coalesce(sum(amount_cents), 0) FROM {payments}.payments WHERE status = 'succeeded'"
        )
        refunded_ok = await conn.fetchval(
            f"SELECT count(*) FROM {payments}.payments"
            " WHERE status = 'refunded' AND refunded_cents <> amount_cents"
        )
        confirmed = await conn.fetchval(
            f"SELECT coalesce(sum(total_cents), 0) FROM {orders}.orders"
            " WHERE status IN ('CONFIRMED', 'SHIPPED', 'DELIVERED', 'RETURN_REQUESTED')"
        )
        if charged != confirmed:
            found.append(f"charges - refunds = {charged} but confirmed totals = {confirmed}")
        if refunded_ok:
            found.append(f"{refunded_ok} refunds differ from their charge")
        # No product is oversold: what is reserved is what is held for orders, never beyond stock.
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
            " WHERE r.status = 'held' AND o.status NOT IN ('CONFIRMED', 'SHIPPED')"
        )
        found += [f"order {r['order_id']} is {r['status']} but still holds stock" for r in leaks]
        # Every order reaches a state that waits for no saga step.
        stuck = await conn.fetch(
            f"SELECT order_id, status FROM {orders}.orders WHERE status IN ('PENDING', 'PAID')"
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
                " WHERE o.points_redeemed > 0 AND ("
                "  (o.status IN ('CONFIRMED', 'SHIPPED', 'DELIVERED', 'RETURN_REQUESTED')"
                "   AND r.status IS DISTINCT FROM 'redeemed')"
                "  OR (o.status IN ('CANCELLED', 'RETURNED') AND r.status = 'redeemed'))"
            )
            found += [
                f"order {r['order_id']} is {r['status']} but its points are {r['points'] or 'not asked for'}"
                for r in unsettled
            ]
        # No committed state change loses its event: every outbox is empty once the system is quiet.
        for schema in schemas:
            pending = await conn.fetchval(f"SELECT count(*) FROM {schema}.outbox")
            if pending:
                found.append(f"{pending} events never left the outbox of {schema}")
    finally:
        await conn.close()
    return found
