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


# What UpdateProduct may change: what a customer sees of a product. Its stock and low-stock
# threshold are inventory's (AdjustStock); who sells it and when it was published never change.
EDITABLE_FIELDS = ("name", "description", "category", "price")


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
    )
    changed = [
        path for path in EDITABLE_FIELDS if path in paths and _value(updated, path) != _value(product, path)
    ]
    return updated, changed


def _value(product: Product, path: str) -> object:
    return (product.price_cents, product.currency_code) if path == "price" else getattr(product, path)
