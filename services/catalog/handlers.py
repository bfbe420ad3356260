"""catalog's use cases and event handlers (its projections)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from a4co.artisans.events.v1 import artisan_events_pb2 as artisan_events
from a4co.inventory.events.v1 import inventory_events_pb2 as inventory_events
from services.catalog.adapters.postgres import Projections, Search
from services.catalog.domain import (
    MAX_PAGED,
    Hit,
    ProductView,
    SearchFilters,
    decode_page_token,
    encode_page_token,
)
from services.platform import return_exceptions
from services.platform.db import Connection
from services.platform.errors import NotFoundError
from services.platform.events.consumer import HandlerContext


@dataclass(frozen=True, slots=True)
class Deps:
    """What the use cases are built with."""

    search: Search


@dataclass(frozen=True, slots=True)
class Page:
    """One page of search results."""

    hits: list[Hit]
    next_page_token: str
    total: int


async def search_products(deps: Deps, filters: SearchFilters, page_size: int, page_token: str) -> Page:
    """Ranked products matching the filters; typos, accents and plurals forgiven."""
    fingerprint = filters.fingerprint()
    offset = decode_page_token(page_token, fingerprint)
    hits, total = await deps.search.search(filters, offset, page_size)
    following = offset + len(hits)
    more = following < total and following < MAX_PAGED
    return Page(hits, encode_page_token(following, fingerprint) if more else "", total)


async def get_product(deps: Deps, product_id: str) -> ProductView:
    """One product."""
    product = await deps.search.product(product_id)
    if product is None:
        if await deps.search.withdrawn(product_id):
            raise NotFoundError("PRODUCT_WITHDRAWN", f"product {product_id} was withdrawn from sale")
        raise NotFoundError("PRODUCT_NOT_FOUND", f"no product {product_id}")
    return product


def _moment(ctx: HandlerContext) -> datetime:
    stamp = ctx.event.envelope.occurred_at
    return stamp.ToDatetime(tzinfo=UTC) if stamp.seconds else datetime.now(UTC)


async def on_product(
    deps: Deps,
    event: artisan_events.ProductPublished | artisan_events.ProductUpdated | artisan_events.ProductWithdrawn,
    ctx: HandlerContext,
) -> None:
    """A product as of its revision: put on sale (revision 1), changed, or withdrawn from sale (then
    no search finds it); an older revision than the one recorded changes nothing."""
    published = event.publish_time.ToDatetime(tzinfo=UTC) if event.publish_time.seconds else _moment(ctx)
    await Projections(ctx.conn).upsert_product(
        event.product_id,
        event.artisan_id,
        event.name,
        event.description,
        event.category,
        event.price.amount_cents,
        event.price.currency_code or "EUR",
        published,
        1 if isinstance(event, artisan_events.ProductPublished) else event.revision,
        event.withdraw_time.ToDatetime(tzinfo=UTC)
        if isinstance(event, artisan_events.ProductWithdrawn)
        else None,
        return_exceptions.name_of(event.return_exception),
    )


async def on_artisan(
    deps: Deps, event: artisan_events.ArtisanOnboarded | artisan_events.ArtisanUpdated, ctx: HandlerContext
) -> None:
    """A workshop's name and place, for results and distance filters; a move takes its products'
    place in the search index with it (the `artisans_moved` trigger)."""
    await Projections(ctx.conn).upsert_artisan(
        event.artisan_id,
        event.display_name,
        event.locality,
        event.location.latitude,
        event.location.longitude,
        event.revision if isinstance(event, artisan_events.ArtisanUpdated) else 1,
    )


async def on_stock_adjusted(deps: Deps, event: inventory_events.StockAdjusted, ctx: HandlerContext) -> None:
    """New availability after an artisan's change."""
    ctx.stage(_write_availability, (event.stock.product_id, event.stock.available, _moment(ctx)))


async def on_stock_moved(
    deps: Deps, event: inventory_events.StockReserved | inventory_events.StockReleased, ctx: HandlerContext
) -> None:
    """New availability after an order's reservation or release."""
    moment = _moment(ctx)
    for line in event.lines:
        ctx.stage(_write_availability, (line.stock.product_id, line.stock.available, moment))


async def _write_availability(conn: Connection, reports: list[tuple[str, int, datetime]]) -> None:
    """A transaction's availability reports with one statement (a staged writer). Reports guarded
    by their moment commute, so a low-stock warning written earlier in the batch changes nothing."""
    await Projections(conn).set_available_many(reports)


async def on_low_stock(deps: Deps, event: inventory_events.LowStockWarning, ctx: HandlerContext) -> None:
    """Remember the artisan's threshold, so results can say 'few left'."""
    await Projections(ctx.conn).set_low_threshold(
        event.product_id, event.available, event.threshold, _moment(ctx)
    )
