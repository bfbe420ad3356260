"""artisans' use cases."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from a4co.artisans.events.v1 import artisan_events_pb2 as events
from a4co.type.v1 import lat_lng_pb2, money_pb2
from services.artisans.adapters.postgres import ArtisansUnitOfWork, Catalogue
from services.artisans.domain import (
    AlreadyOnboardedError,
    Listing,
    NotOnboardedError,
    OffboardedError,
    Product,
    Registered,
    WithdrawnError,
    Workshop,
    apply_update,
    apply_workshop_update,
)
from services.platform import return_exceptions
from services.platform.auth import Principal, Role
from services.platform.errors import (
    AbortedError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    RequestIdReusedError,
)
from services.platform.paging import Page
from services.platform.timestamps import to_timestamp


@dataclass(frozen=True, slots=True)
class Deps:
    """What the use cases are built with."""

    uow: Callable[[], ArtisansUnitOfWork]
    pool: asyncpg.Pool  # reads that need no transaction


BY_ANOTHER = "by another artisan's call"  # how a reused request id was used


def shown(p: Product) -> dict[str, Any]:
    """What a customer sees of a product, as the fields of its messages and every event of it."""
    return {
        "product_id": p.product_id,
        "artisan_id": p.artisan_id,
        "name": p.name,
        "description": p.description,
        "category": p.category,
        "price": money_pb2.Money(currency_code=p.currency_code, amount_cents=p.price_cents),
        "return_exception": return_exceptions.value_of(p.return_exception),
    }


async def onboard(deps: Deps, principal: Principal, request_id: str, workshop: Workshop) -> Registered:
    """The calling artisan's workshop joins the marketplace (ArtisanOnboarded), once."""
    async with deps.uow() as uow:
        existing = await uow.catalogue.workshop(principal.user_id)
        if existing is not None:
            return _onboarded(existing, request_id)
        mine = Workshop(principal.user_id, *_fields(workshop))
        stored = await uow.catalogue.onboard(mine, request_id)
        if stored is None:  # a call that committed meanwhile: this artisan's, or another's request id
            existing = await uow.catalogue.workshop(principal.user_id)
            if existing is None:
                raise RequestIdReusedError(BY_ANOTHER)
            return _onboarded(existing, request_id)
        await uow.outbox.add(
            events.ArtisanOnboarded(
                **_public(stored.workshop), onboard_time=to_timestamp(stored.onboard_time)
            ),
            aggregate_id=mine.artisan_id,
        )
    return stored


def _public(w: Workshop) -> dict[str, Any]:
    """What anyone may know of a workshop, as the fields of its events (its address is private)."""
    return {
        "artisan_id": w.artisan_id,
        "display_name": w.display_name,
        "craft": w.craft,
        "locality": w.locality,
        "location": lat_lng_pb2.LatLng(latitude=w.latitude, longitude=w.longitude),
        "bio": w.bio,
    }


def _onboarded(existing: Registered, request_id: str) -> Registered:
    """The answer to onboarding an artisan whose workshop joined already: the workshop, to a retry
    of the call that onboarded it."""
    if existing.request_id != request_id:
        raise AlreadyOnboardedError()
    return existing


def _still_at(expected: int, revision: int, what: str) -> None:
    """A change made only at the revision the caller read (`expected`, 0 for any): ABORTED with
    the revision now in the metadata otherwise."""
    if expected and revision != expected:
        raise AbortedError(
            "REVISION_CHANGED",
            f"{what} is at revision {revision}, not {expected}",
            metadata={"revision": str(revision)},
        )


async def get_workshop(deps: Deps, principal: Principal) -> Registered:
    """The calling artisan's workshop (NotOnboardedError before OnboardArtisan)."""
    found = await Catalogue(deps.pool).workshop(principal.user_id)
    if found is None:
        raise NotOnboardedError()
    return found


async def update_workshop(
    deps: Deps, principal: Principal, changes: Workshop, paths: list[str], expected_revision: int = 0
) -> Registered:
    """Change the fields named in `paths` of the caller's workshop (ArtisanUpdated, when something
    changed)."""
    async with deps.uow() as uow:
        found = await uow.catalogue.workshop(principal.user_id, to_change=True)
        if found is None:
            raise NotOnboardedError()
        if found.offboard_time is not None:
            raise OffboardedError()
        _still_at(expected_revision, found.revision, "the workshop")
        updated, changed = apply_workshop_update(found.workshop, changes, paths)
        if not changed:
            return found
        stored = await uow.catalogue.update_workshop(updated, found.revision + 1)
        await uow.outbox.add(
            events.ArtisanUpdated(
                **_public(stored.workshop),
                revision=stored.revision,
                changed_fields=changed,
                update_time=to_timestamp(stored.update_time),
            ),
            aggregate_id=stored.workshop.artisan_id,
        )
    return stored


def _retried(seen: Listing, principal: Principal) -> Listing:
    """The answer to a call whose request id was used already: the product it published, if the
    caller's (as it is now)."""
    if seen.product.artisan_id != principal.user_id:
        raise RequestIdReusedError(BY_ANOTHER)
    return seen


def _fields(w: Workshop) -> tuple[str, str, str, float, float, dict[str, str], str]:
    return (w.display_name.strip(), w.craft, w.locality.strip(), w.latitude, w.longitude, w.address, w.bio)


async def publish(deps: Deps, principal: Principal, request_id: str, product: Product) -> Listing:
    """Put a product of the calling, onboarded artisan on sale (ProductPublished), once per request."""
    async with deps.uow() as uow:
        seen = await uow.catalogue.product_by_request(request_id)
        if seen is not None:
            return _retried(seen, principal)
        seller = await uow.catalogue.workshop(principal.user_id, to_sell=True)
        if seller is None:
            raise NotOnboardedError()
        if seller.offboard_time is not None:
            raise OffboardedError()
        mine = Product(
            str(uuid.uuid4()),
            principal.user_id,
            product.name.strip(),
            product.description.strip(),
            product.category,
            product.price_cents,
            product.currency_code or "EUR",
            product.initial_stock,
            product.low_stock_threshold,
            product.return_exception,
        )
        moment = await uow.catalogue.publish(mine, request_id)
        if moment is None:  # a call with the same request id committed meanwhile
            seen = await uow.catalogue.product_by_request(request_id)
            assert seen is not None
            return _retried(seen, principal)
        await uow.outbox.add(
            events.ProductPublished(
                **shown(mine),
                initial_stock=mine.initial_stock,
                low_stock_threshold=mine.low_stock_threshold,
                publish_time=to_timestamp(moment),
            ),
            aggregate_id=mine.product_id,
        )
    return Listing(mine, moment, 1, moment)


async def _mine_to_change(uow: ArtisansUnitOfWork, principal: Principal, product_id: str) -> Listing:
    """One of the caller's products, locked for a change; another artisan's is reported as missing
    (its existence is not the caller's business)."""
    listing = await uow.catalogue.product_to_change(product_id)
    if listing is None or listing.product.artisan_id != principal.user_id:
        raise NotFoundError("PRODUCT_NOT_FOUND", f"you sell no product {product_id}")
    return listing


async def update(
    deps: Deps,
    principal: Principal,
    product_id: str,
    changes: Product,
    paths: list[str],
    expected_revision: int = 0,
) -> Listing:
    """Change the fields named in `paths` of one of the caller's products (ProductUpdated, when
    something changed)."""
    async with deps.uow() as uow:
        listing = await _mine_to_change(uow, principal, product_id)
        if listing.withdraw_time is not None:
            raise WithdrawnError(product_id)
        _still_at(expected_revision, listing.revision, f"product {product_id}")
        updated, changed = apply_update(listing.product, changes, paths)
        if not changed:
            return listing
        stored = await uow.catalogue.update(updated, listing.revision + 1)
        await uow.outbox.add(
            events.ProductUpdated(
                **shown(stored.product),
                revision=stored.revision,
                changed_fields=changed,
                publish_time=to_timestamp(stored.publish_time),
                update_time=to_timestamp(stored.update_time),
            ),
            aggregate_id=product_id,
        )
    return stored


async def withdraw(deps: Deps, principal: Principal, product_id: str) -> Listing:
    """Take one of the caller's products off sale for good (ProductWithdrawn, once)."""
    async with deps.uow() as uow:
        listing = await _mine_to_change(uow, principal, product_id)
        if listing.withdraw_time is not None:
            return listing
        stored = await uow.catalogue.withdraw(product_id, listing.revision + 1)
        await _announce_withdrawn(uow, stored, with_workshop=False)
    return stored


async def _announce_withdrawn(uow: ArtisansUnitOfWork, stored: Listing, *, with_workshop: bool) -> None:
    """ProductWithdrawn for a product just withdrawn, in its transaction (`with_workshop`: as its
    workshop leaves)."""
    assert stored.withdraw_time is not None
    await uow.outbox.add(
        events.ProductWithdrawn(
            **shown(stored.product),
            revision=stored.revision,
            publish_time=to_timestamp(stored.publish_time),
            withdraw_time=to_timestamp(stored.withdraw_time),
            with_workshop=with_workshop,
        ),
        aggregate_id=stored.product.product_id,
    )


async def offboard(deps: Deps, principal: Principal, artisan_id: str = "") -> tuple[Registered, int]:
    """Take a workshop out of the marketplace for good: the caller's, or the one an admin names.
    Every product it has on sale is withdrawn (ProductWithdrawn each), then the workshop leaves
    (ArtisanOffboarded), in one transaction. Returns the workshop and how many products this call
    withdrew; a workshop that left already is returned as it is, with 0."""
    if not artisan_id and principal.role is Role.ADMIN:
        raise InvalidArgumentError(
            [FieldViolation("artisan_id", "an admin names the artisan whose workshop leaves")]
        )
    target = artisan_id or principal.user_id
    principal.require_self_or_admin(target)
    async with deps.uow() as uow:
        found = await uow.catalogue.workshop(target, to_change=True)
        if found is None:
            if target == principal.user_id:
                raise NotOnboardedError()
            raise NotFoundError("ARTISAN_NOT_FOUND", f"no workshop of artisan {target}")
        if found.offboard_time is not None:
            return found, 0
        withdrawn = await uow.catalogue.withdraw_all(target)
        for listing in withdrawn:
            await _announce_withdrawn(uow, listing, with_workshop=True)
        stored = await uow.catalogue.offboard(target, found.revision + 1)
        assert stored.offboard_time is not None
        await uow.outbox.add(
            events.ArtisanOffboarded(
                **_public(stored.workshop),
                revision=stored.revision,
                withdrawn_products=len(withdrawn),
                offboard_time=to_timestamp(stored.offboard_time),
            ),
            aggregate_id=target,
        )
    return stored, len(withdrawn)


async def list_products(deps: Deps, principal: Principal, show_withdrawn: bool, page: Page) -> list[Listing]:
    """A page of the caller's products, newest first (one statement: no transaction)."""
    return await Catalogue(deps.pool).products_of(principal.user_id, show_withdrawn, page)
