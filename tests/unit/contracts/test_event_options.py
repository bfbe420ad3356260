"""The event options declared in proto/ are complete and consistent."""

from __future__ import annotations

import pytest

from services.platform.events.registry import (
    EventRegistry,
    RegistryError,
    load_registry,
    subject_matches,
)

REQUIRED_EVENTS = {
    "a4co.orders.OrderCreated",
    "a4co.orders.OrderStatusChanged",
    "a4co.orders.OrderDelivered",
    "a4co.inventory.StockReserved",
    "a4co.inventory.StockReservationFailed",
    "a4co.inventory.StockReleased",
    "a4co.inventory.StockAdjusted",
    "a4co.inventory.LowStockWarning",
    "a4co.payments.PaymentProcessed",
    "a4co.payments.PaymentFailed",
    "a4co.payments.RefundIssued",
    "a4co.identity.UserRegistered",
    "a4co.identity.ProfileUpdated",
    "a4co.artisans.ArtisanOnboarded",
    "a4co.artisans.ProductPublished",
}


@pytest.fixture(scope="module")
def registry() -> EventRegistry:
    return load_registry()


def test_every_event_of_the_architecture_is_declared(registry: EventRegistry) -> None:
    declared = {e.event_type for e in registry.events}
    assert declared >= REQUIRED_EVENTS, sorted(REQUIRED_EVENTS - declared)


def test_every_event_has_subject_stream_version_and_aggregate(registry: EventRegistry) -> None:
    for event in registry.events:
        assert event.subject, event.full_name
        assert event.stream, event.full_name
        assert event.version >= 1, event.full_name
        assert event.aggregate_type, event.full_name


def test_event_version_matches_its_package_version(registry: EventRegistry) -> None:
    for event in registry.events:
        package_version = event.descriptor.file.package.rsplit(".", 1)[-1]
        assert package_version == f"v{event.version}", event.full_name


def test_a_subject_carries_one_event_type(registry: EventRegistry) -> None:
    # Versions of one event type may share a subject (the version is in the envelope); two
    # event types never do, so that consumers can filter by subject.
    types_by_subject: dict[str, set[str]] = {}
    for event in registry.events:
        types_by_subject.setdefault(event.subject, set()).add(event.event_type)
    assert {s: t for s, t in types_by_subject.items() if len(t) > 1} == {}


def test_every_subject_falls_under_its_stream_and_no_other(registry: EventRegistry) -> None:
    for event in registry.events:
        own = registry.stream(event.stream)
        assert any(subject_matches(event.subject, s) for s in own.subjects), event.full_name
        others = [s for s in registry.streams if s.name != own.name]
        for other in others:
            assert not any(subject_matches(event.subject, s) for s in other.subjects), (
                f"{event.subject} is also captured by stream {other.name}"
            )


def test_an_event_names_the_stream_of_its_file(registry: EventRegistry) -> None:
    from services.platform.events.registry import stream_of_file

    for event in registry.events:
        file_stream = stream_of_file(event.descriptor.file)
        assert file_stream is not None, f"{event.descriptor.file.name} declares no stream"
        assert file_stream.name == event.stream, event.full_name


def test_every_stream_is_produced_by_the_context_of_its_events(registry: EventRegistry) -> None:
    for event in registry.events:
        assert registry.stream(event.stream).producer == event.context


def test_lookup_by_type_version_and_class(registry: EventRegistry) -> None:
    from a4co.orders.events.v1 import order_events_pb2

    by_class = registry.of(order_events_pb2.OrderCreated)
    assert by_class is registry.get("a4co.orders.OrderCreated", 1)
    assert registry.latest("a4co.orders.OrderCreated") is by_class
    with pytest.raises(RegistryError):
        registry.get("a4co.orders.OrderCreated", 99)
    with pytest.raises(RegistryError):
        registry.of(order_events_pb2.OrderLine)


@pytest.mark.parametrize(
    ("subject", "pattern", "expected"),
    [
        ("a4co.orders.order.created", "a4co.orders.>", True),
        ("a4co.orders", "a4co.orders.>", False),
        ("a4co.orders.order.created", "a4co.*.order.created", True),
        ("a4co.orders.order.created", "a4co.*.order", False),
        ("a4co.orders.order.created", "a4co.orders.order.created", True),
        ("a4co.ordersx.order.created", "a4co.orders.>", False),
    ],
)
def test_subject_matching_follows_nats_wildcards(subject: str, pattern: str, expected: bool) -> None:
    assert subject_matches(subject, pattern) is expected
