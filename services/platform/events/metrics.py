"""Prometheus metrics of the event platform; every series carries the service's name."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_PUBLISHED = Counter(
    "a4co_events_published_total",
    "Events published to JetStream by the outbox relay.",
    ["service", "event_type"],
)
PUBLISH_FAILURES = Counter(
    "a4co_outbox_publish_failures_total",
    "Outbox publish attempts that failed or timed out (the rows stay and are retried).",
    ["service"],
)
OUTBOX_PENDING = Gauge(
    "a4co_outbox_pending",
    "Events committed to the outbox and not yet published.",
    ["service"],
)
OUTBOX_OLDEST_AGE = Gauge(
    "a4co_outbox_oldest_age_seconds",
    "Age of the oldest unpublished outbox event (0 when none).",
    ["service"],
)
EVENTS_CONSUMED = Counter(
    "a4co_events_consumed_total",
    "Events delivered to a consumer, by outcome: handled, duplicate, skipped, retried, dead_lettered.",
    ["service", "event_type", "result"],
)
HANDLER_DURATION = Histogram(
    "a4co_event_handler_duration_seconds",
    "Time to handle one event, its transaction included.",
    ["service", "event_type"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
CONSUMER_BATCH = Histogram(
    "a4co_consumer_batch_messages",
    "Messages a consumer fetched and handled together (in one transaction when more than one).",
    ["service", "stream"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
REDELIVERIES = Counter(
    "a4co_event_redeliveries_total",
    "Deliveries of an event beyond its first.",
    ["service", "event_type"],
)
DLQ_MESSAGES = Counter(
    "a4co_dlq_messages_total",
    "Events sent to the dead-letter stream, by reason.",
    ["service", "event_type", "reason"],
)
CONSUMER_PENDING = Gauge(
    "a4co_consumer_pending_messages",
    "Messages in the stream not yet delivered to the service's durable consumer (its lag).",
    ["service", "stream"],
)
CONSUMER_UNACKED = Gauge(
    "a4co_consumer_unacknowledged_messages",
    "Messages delivered to the consumer and not yet acknowledged.",
    ["service", "stream"],
)
EVENTS_HELD = Gauge(
    "a4co_consumer_events_held",
    "Events a consumer keeps unsettled while its database does not answer or refuses to write (0 otherwise).",
    ["service", "stream"],
)
CONFLICTS = Counter(
    "a4co_consumer_conflicts_total",
    "Handlers' transactions rolled back for a conflict with a concurrent one (a deadlock, a"
    " serialization failure) and tried again at once.",
    ["service", "stream"],
)
