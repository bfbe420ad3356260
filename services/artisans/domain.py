"""Workshops and products as artisans declare them: pure rules, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

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
