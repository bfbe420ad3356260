"""Workshops and products as artisans declare them: pure rules, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from services.platform.errors import AlreadyExistsError, FailedPreconditionError

CRAFTS = frozenset(
    {
        "aceite",
        "ceramica",
        "esparto",
        "queso",
        "miel",
        "forja",
        "vino",
        "dulces",
        "cuero",
        "madera",
        "textil",
        "piedra",
    }
)
# The province of Jaén as a bounding box: workshops must be in it.
JAEN_LAT = (37.35, 38.60)
JAEN_LNG = (-4.35, -2.10)


class AlreadyOnboardedError(AlreadyExistsError):
    """The artisan's workshop joined already (under another request)."""

    def __init__(self) -> None:
        super().__init__("ALREADY_ONBOARDED", "this artisan's workshop is onboarded already")


class NotOnboardedError(FailedPreconditionError):
    """Products can be published only by an onboarded workshop."""

    def __init__(self) -> None:
        super().__init__("NOT_ONBOARDED", "onboard the workshop before publishing products")


class OffboardedError(FailedPreconditionError):
    """A workshop that left the marketplace stays as it left."""

    def __init__(self) -> None:
        super().__init__("ARTISAN_OFFBOARDED", "this workshop has left the marketplace")


class WithdrawnError(FailedPreconditionError):
    """A product withdrawn from sale stays as it was withdrawn."""

    def __init__(self, product_id: str) -> None:
        super().__init__("PRODUCT_WITHDRAWN", f"product {product_id} was withdrawn from sale")


def in_jaen(latitude: float, longitude: float) -> bool:
    """Whether a point lies in the province of Jaén."""
    return JAEN_LAT[0] <= latitude <= JAEN_LAT[1] and JAEN_LNG[0] <= longitude <= JAEN_LNG[1]


@dataclass(frozen=True, slots=True)
class Workshop:
    """An onboarded artisan's workshop."""

    artisan_id: str
    display_name: str
    craft: str
    locality: str
    latitude: float
    longitude: float
    address: dict[str, str]
    bio: str


# What UpdateArtisan may change: everything a workshop declares. Who it is and when it joined never
# change.
WORKSHOP_FIELDS = ("display_name", "craft", "locality", "location", "address", "bio")


@dataclass(frozen=True, slots=True)
class Registered:
    """An onboarded workshop and its history: its revision counts its onboarding and every change."""

    workshop: Workshop
    onboard_time: datetime
    revision: int
    update_time: datetime
    request_id: str  # the OnboardArtisan call's
    offboard_time: datetime | None = None  # when it left the marketplace


def apply_workshop_update(w: Workshop, changes: Workshop, paths: list[str]) -> tuple[Workshop, list[str]]:
    """The workshop with the fields named in `paths` taken from `changes` (checked by the API);
    returns the paths whose values changed, in WORKSHOP_FIELDS' order."""
    moved = "location" in paths
    updated = replace(
        w,
        display_name=changes.display_name.strip() if "display_name" in paths else w.display_name,
        craft=changes.craft if "craft" in paths else w.craft,
        locality=changes.locality.strip() if "locality" in paths else w.locality,
        latitude=changes.latitude if moved else w.latitude,
        longitude=changes.longitude if moved else w.longitude,
        address=changes.address if "address" in paths else w.address,
        bio=changes.bio if "bio" in paths else w.bio,
    )
    changed = [
        path
        for path in WORKSHOP_FIELDS
        if path in paths and _workshop_value(updated, path) != _workshop_value(w, path)
    ]
    return updated, changed


def _workshop_value(w: Workshop, path: str) -> object:
    return (w.latitude, w.longitude) if path == "location" else getattr(w, path)


@dataclass(frozen=True, slots=True)
class Product:
    """A published product."""

    product_id: str
    artisan_id: str
    name: str
    description: str
    category: str
    price_cents: int
    currency_code: str
    initial_stock: int
    low_stock_threshold: int
    # Why it may not be returned ("PERISHABLE", "PERSONALISED"; services/platform/return_exceptions.py),
    # empty when it may (decision 53).
    return_exception: str = ""


# What UpdateProduct may change: what a customer sees of a product. Its stock and low-stock
# threshold are inventory's (AdjustStock); who sells it and when it was published never change.
EDITABLE_FIELDS = ("name", "description", "category", "price", "return_exception")


@dataclass(frozen=True, slots=True)
class Listing:
    """A published product and its history: its revision counts its publication and every change."""

    product: Product
    publish_time: datetime
    revision: int
    update_time: datetime
    withdraw_time: datetime | None = None


def apply_update(product: Product, changes: Product, paths: list[str]) -> tuple[Product, list[str]]:
    """The product with the fields named in `paths` taken from `changes` (checked by the API);
    returns the paths whose values changed, in EDITABLE_FIELDS' order."""
    price = "price" in paths
    updated = replace(
        product,
        name=changes.name.strip() if "name" in paths else product.name,
        description=changes.description.strip() if "description" in paths else product.description,
        category=changes.category if "category" in paths else product.category,
        price_cents=changes.price_cents if price else product.price_cents,
        currency_code=(changes.currency_code or "EUR") if price else product.currency_code,
        return_exception=(
            changes.return_exception if "return_exception" in paths else product.return_exception
        ),
    )
    changed = [
        path for path in EDITABLE_FIELDS if path in paths and _value(updated, path) != _value(product, path)
    ]
    return updated, changed


def _value(product: Product, path: str) -> object:
    return (product.price_cents, product.currency_code) if path == "price" else getattr(product, path)
