"""Distances and delivery zones of the province of Jaén: pure Python, no I/O."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

EARTH_RADIUS_KM = 6371.0088

# The province of Jaén, as a bounding box (generous by a few kilometres at the edges).
JAEN_LAT = (37.35, 38.60)
JAEN_LNG = (-4.35, -2.10)


@dataclass(frozen=True, slots=True)
class Point:
    """A point in decimal degrees."""

    latitude: float
    longitude: float


@dataclass(frozen=True, slots=True)
class Workshop:
    """An artisan's workshop."""

    artisan_id: str
    display_name: str
    craft: str
    locality: str
    location: Point


# A workshop's location with the version of its record (one more on every change); None for a
# workshop that left the marketplace (decision 50): it delivers nowhere.
Located = tuple[int, Point | None]

# Why a workshop that left is quoted as not deliverable.
OFFBOARDED = "ARTISAN_OFFBOARDED"


class ProductCount(NamedTuple):
    """A workshop's products on sale, and how many product events made that figure (one for each
    product, one more for each withdrawn): it only grows, so of two counts the one with more
    changes is the newer."""

    on_sale: int = 0
    changes: int = 0


NO_PRODUCTS = ProductCount()


@dataclass(frozen=True, slots=True)
class Zone:
    """A delivery zone: how far it reaches, its fee and its delay."""

    name: str
    max_km: float
    fee_cents: int
    days: int


ZONES = (
    Zone("local", 10.0, 250, 1),
    Zone("comarca", 40.0, 490, 2),
    Zone("provincia", 160.0, 790, 3),
)


@dataclass(frozen=True, slots=True)
class Quote:
    """The price and feasibility of one delivery."""

    deliverable: bool
    distance_km: float
    fee_cents: int
    zone: str
    days: int
    reason: str = ""


def haversine_km(a: Point, b: Point) -> float:
    """The great-circle distance between two points, in kilometres."""
    lat1, lat2 = math.radians(a.latitude), math.radians(b.latitude)
    dlat, dlng = lat2 - lat1, math.radians(b.longitude - a.longitude)
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlng / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(h))


def in_jaen(point: Point) -> bool:
    """Whether a point lies in the province of Jaén."""
    return JAEN_LAT[0] <= point.latitude <= JAEN_LAT[1] and JAEN_LNG[0] <= point.longitude <= JAEN_LNG[1]


def quote(origin: Point | None, destination: Point) -> Quote:
    """The delivery from a workshop to a destination: the nearest zone that reaches it; none
    from a workshop that left the marketplace (`origin` None).

    Deliveries stay within the province of Jaén.
    """
    if origin is None:
        return Quote(False, 0.0, 0, "", 0, OFFBOARDED)
    distance = round(haversine_km(origin, destination), 2)
    if not in_jaen(destination):
        return Quote(False, distance, 0, "", 0, "OUTSIDE_PROVINCE")
    for zone in ZONES:
        if distance <= zone.max_km:
            return Quote(True, distance, zone.fee_cents, zone.name, zone.days)
    return Quote(False, distance, 0, "", 0, "OUT_OF_RANGE")
