"""Distances and delivery zones of the province of Jaén."""

from __future__ import annotations

import pytest

from services.geo.domain import Point, haversine_km, in_jaen, quote

UBEDA = Point(38.0133, -3.3706)
BAEZA = Point(37.9938, -3.4700)
JAEN = Point(37.7796, -3.7849)
CAZORLA = Point(37.9148, -3.0030)
MADRID = Point(40.4168, -3.7038)


def test_haversine_matches_known_distances() -> None:
    assert haversine_km(UBEDA, BAEZA) == pytest.approx(8.95, abs=0.2)
    assert haversine_km(UBEDA, JAEN) == pytest.approx(45.0, abs=1.5)


@pytest.mark.parametrize(
    ("destination", "zone", "fee", "days"),
    [(BAEZA, "local", 250, 1), (CAZORLA, "comarca", 490, 2), (JAEN, "provincia", 790, 3)],
)
def test_the_nearest_zone_that_reaches_prices_the_delivery(
    destination: Point, zone: str, fee: int, days: int
) -> None:
    q = quote(UBEDA, destination)
    assert (q.deliverable, q.zone, q.fee_cents, q.days) == (True, zone, fee, days)


def test_no_delivery_outside_the_province() -> None:
    q = quote(UBEDA, MADRID)
    assert not q.deliverable
    assert q.reason == "OUTSIDE_PROVINCE"
    assert q.fee_cents == 0
    assert not in_jaen(MADRID)
    assert in_jaen(CAZORLA)
