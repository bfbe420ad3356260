"""inventory's use cases and event handlers."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from a4co.artisans.events.v1 import artisan_events_pb2 as artisan_events
from a4co.inventory.events.v1 import inventory_events_pb2 as events
from services.inventory.adapters.cache import StockCache
from services.inventory.adapters.postgres import InventoryUnitOfWork, Stock
from services.inventory.domain import Availability, StockLevel, became_low
from services.platform.auth import Principal, Role
from services.platform.errors import NotFoundError, PermissionDeniedError, RequestIdReusedError
from services.platform.events.consumer import HandlerContext
from services.platform.outages import REDIS_OUTAGES
from services.platform.timestamps import to_timestamp


@dataclass(frozen=True, slots=True)
class Deps:
    """What the use cases are built with."""

    uow: Callable[[], InventoryUnitOfWork]
    cache: StockCache


def level_event(level: StockLevel) -> events.StockLevel:
    """A stock level as carried by inventory's events."""
    return events.StockLevel(
        product_id=level.product_id,
        artisan_id=level.artisan_id,
        on_hand=level.on_hand,
        reserved=level.reserved,
        available=level.available,
    )


def low_stock_warning(level: StockLevel) -> events.LowStockWarning:
    """The warning for a product that went under its threshold."""
    return events.LowStockWarning(
        product_id=level.product_id,
        artisan_id=level.artisan_id,
        available=level.available,
        threshold=level.low_stock_threshold,
        warn_time=to_timestamp(level.updated_at),
    )


async def check_stock(deps: Deps, lines: list[tuple[str, int]]) -> list[Availability]:
    """Whether each requested quantity is available now: from the cache, filled from the database."""
    ids = [product_id for product_id, _ in lines]
    try:
        cached = await deps.cache.available(ids)
    except REDIS_OUTAGES:  # the cache is a copy: the database answers alone meanwhile
        cached = {}
    missing = [pid for pid in ids if pid not in cached]
    if missing:
        async with deps.uow() as uow:
            found = await uow.stock.get_many(missing)
        await put_in_cache(deps, list(found.values()))
        for level in found.values():
            cached[level.product_id] = level.available
    return [Availability(pid, qty, cached.get(pid, 0), pid in cached) for pid, qty in lines]


async def put_in_cache(deps: Deps, levels: list[StockLevel]) -> None:
    """Cache `levels`; should Redis fail, the cache marks them stale, and they are written again
    once it answers (`rewrite_stock`), so the failure stops here."""
    with contextlib.suppress(*REDIS_OUTAGES):
        await deps.cache.put_many(levels)


async def rewrite_stock(deps: Deps, product_ids: set[str]) -> None:
    """Write the cached levels of `product_ids` again from the database (`StockCache.stale`)."""
    async with deps.uow() as uow:
        found = await uow.stock.get_many(sorted(product_ids))
    await deps.cache.put_many(list(found.values()))


async def get_stock(deps: Deps, product_id: str) -> StockLevel:
    """One product's stock."""
    async with deps.uow() as uow:
        level = await uow.stock.get(product_id)
    if level is None:
        raise NotFoundError("PRODUCT_NOT_FOUND", f"inventory knows no product {product_id}")
    return level


FOR_ANOTHER = "for another product"  # how a reused request id was used


async def adjust_stock(
    deps: Deps,
    principal: Principal,
    request_id: str,
    product_id: str,
    delta: int,
    reason: str,
    threshold: int | None,
) -> StockLevel:
    """Change a product's stock on hand, once per request id; only its artisan (or an admin)."""
    async with deps.uow() as uow:
        level = await uow.stock.get(product_id, for_update=True)
        if level is None:
            raise NotFoundError("PRODUCT_NOT_FOUND", f"inventory knows no product {product_id}")
        if principal.role is not Role.ADMIN and level.artisan_id != principal.user_id:
            raise PermissionDeniedError("NOT_PRODUCT_OWNER", f"{product_id} is sold by another artisan")
        seen = await uow.stock.adjustment_seen(request_id)
        if seen is not None:
            if seen != product_id:
                raise RequestIdReusedError(FOR_ANOTHER)
            return level  # a retried call: already applied, answer with the current stock
        after = await uow.stock.save(level.adjusted(delta, threshold))
        try:
            await uow.stock.record_adjustment(request_id, product_id, principal.user_id, delta, reason)
        except asyncpg.UniqueViolationError:
            # Taken meanwhile by a call on another product (one on this product waited for its lock).
            raise RequestIdReusedError(FOR_ANOTHER) from None
        await uow.outbox.add(
            events.StockAdjusted(
                product_id=product_id,
                delta=delta,
                reason=reason,
                stock=level_event(after),
                adjust_time=to_timestamp(after.updated_at),
            ),
            aggregate_id=product_id,
        )
        if became_low(level, after):
            await uow.outbox.add(low_stock_warning(after), aggregate_id=product_id)
    await put_in_cache(deps, [after])  # committed: a Redis failure is not the call's
    return after


async def on_product_published(
    deps: Deps, event: artisan_events.ProductPublished, ctx: HandlerContext
) -> None:
    """A new product gets its stock row with the artisan's initial stock and threshold."""
    level = StockLevel(
        product_id=event.product_id,
        artisan_id=event.artisan_id,
        on_hand=max(0, event.initial_stock),
        reserved=0,
        low_stock_threshold=max(0, event.low_stock_threshold),
    )
    created = await Stock(ctx.conn).create(level)
    if created is None:
        return  # published twice under different event ids: the first one counts
    await ctx.publish(
        events.StockAdjusted(
            product_id=created.product_id,
            delta=created.on_hand,
            reason="initial",
            stock=level_event(created),
            adjust_time=to_timestamp(created.updated_at),
        ),
        aggregate_id=created.product_id,
    )
    if created.low:
        await ctx.publish(low_stock_warning(created), aggregate_id=created.product_id)
    ctx.after_commit(lambda: put_in_cache(deps, [created]))
