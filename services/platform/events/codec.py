"""Wrap domain events in the envelope and NATS headers, and unwrap them again.

The body of every message is an `a4co.events.v1.EventEnvelope`; the headers follow the CloudEvents
NATS binding (binary mode) so that routers and people can read an event without decoding it.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.message import DecodeError, Message
from opentelemetry import propagate, trace

from a4co.events.v1 import envelope_pb2
from services.platform.events.registry import EventDef, EventRegistry, RegistryError
from services.platform.events.topology import Topology
from services.platform.flow import Flow, current_flow, new_id
from services.platform.telemetry import tracing_enabled

CONTENT_TYPE = "application/protobuf"
H_ID, H_TYPE, H_SOURCE, H_TIME = "ce-id", "ce-type", "ce-source", "ce-time"
H_SUBJECT, H_SCHEMA, H_SPEC = "ce-subject", "ce-dataschema", "ce-specversion"
H_MSG_ID = "Nats-Msg-Id"
H_TTL = "Nats-TTL"  # how long JetStream keeps the message (the events declared `expires`)
H_TRACEPARENT, H_TRACESTATE = "traceparent", "tracestate"

tracer = trace.get_tracer("a4co.events")

# The largest event this platform publishes, envelope and headers together. NATS refuses a message
# over its `max_payload` (1 MiB by default) every time it is sent, and an outbox row that cannot be
# published holds back every row after it; so an event over this limit is refused when it is
# encoded, inside the transaction of the change that made it, which then does not commit. This
# API's largest event, an order of 50 lines with the longest ids, names and address requests allow,
# is 12,834 bytes with its headers; the services' requests are bounded far below this limit
# (grpc/server.py's MAX_REQUEST_BYTES; decision 29), so only a defect can reach it.
MAX_EVENT_BYTES = 256 * 1024
# What NATS adds to a message's headers and payload (the NATS/1.0 line, separators), and more.
FRAMING_BYTES = 1024


# An event id is a UUID in its usual 8-4-4-4-12 hexadecimal form (either case), as every UUID
# library prints one; PostgreSQL's uuid type reads it, and it holds nothing an SQL literal must escape.
_is_uuid = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
).fullmatch


class EventDecodeError(ValueError):
    """A message body is not an envelope, or its payload is not the message it claims."""


class UnknownEventError(LookupError):
    """An envelope names an event type or version this process does not know."""


class EventTooLargeError(ValueError):
    """An event is over MAX_EVENT_BYTES encoded: NATS would refuse it, so it is not written."""


@dataclass(frozen=True, slots=True)
class OutgoingEvent:
    """An event encoded for the outbox: where it goes and the exact bytes and headers."""

    event_id: str
    event_type: str
    aggregate_id: str
    subject: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class IncomingEvent:
    """An event decoded from a message: its envelope, declaration and payload."""

    envelope: envelope_pb2.EventEnvelope
    definition: EventDef
    payload: Message

    @property
    def event_id(self) -> str:
        """The event's id."""
        return self.envelope.event_id

    @property
    def flow(self) -> Flow:
        """The flow that handling this event continues: same correlation, caused by it."""
        meta = self.envelope.metadata
        return Flow(meta.correlation_id or self.event_id, self.event_id, meta.user_id)


def check_max_payload(max_payload: int) -> None:
    """Refuse a NATS server whose messages cannot hold the largest event this platform publishes
    (`max_payload` is what the server announced when the connection was made)."""
    needed = MAX_EVENT_BYTES + FRAMING_BYTES
    if max_payload < needed:
        raise RuntimeError(
            f"the NATS server accepts messages of up to {max_payload:,} bytes; a4co's events take up"
            f" to {needed:,}: set the server's max_payload to at least that"
        )


def encoded_size(event: OutgoingEvent) -> int:
    """The bytes of an event's body and headers, as NATS counts them against `max_payload`
    (less its framing)."""
    return len(event.body) + _header_lines(event.headers)


def message_size(body: bytes, headers: Mapping[str, str]) -> int:
    """The bytes a message takes of a server's `max_payload`: its body and its headers' block (the
    `NATS/1.0` line, a line per header, a blank line). nats-py checks the body alone before sending;
    a server that gets more than its `max_payload` refuses the message and closes the connection,
    which nats-py then leaves closed."""
    if not headers:
        return len(body)
    return len(body) + len(b"NATS/1.0\r\n\r\n") + _header_lines(headers)


def _header_lines(headers: Mapping[str, str]) -> int:
    """The bytes of the headers' lines, `key: value` and CRLF each."""
    return sum(len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items())


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class EventCodec:
    """Encodes events produced by one service and decodes any known event."""

    def __init__(self, registry: EventRegistry, source: str, topology: Topology) -> None:
        self.registry = registry
        self.source = source
        self.topology = topology

    def encode(
        self,
        event: Message,
        *,
        aggregate_id: str,
        flow: Flow | None = None,
        occurred_at: datetime | None = None,
        ttl_s: float | None = None,
    ) -> OutgoingEvent:
        """Envelope `event` with a new id, the current flow and trace context, and its headers.
        An event declared `expires` needs `ttl_s`, the seconds its message stays in its stream
        (at least 1; a fraction counts as a whole second); no other event takes one."""
        definition = self.registry.of(event)
        if definition.expires != (ttl_s is not None):
            raise ValueError(
                f"{definition.event_type} {'needs' if definition.expires else 'takes no'} ttl_s:"
                f" its contract says expires={definition.expires}"
            )
        flow = flow or current_flow()
        event_id = new_id()
        moment = occurred_at or datetime.now(UTC)
        carrier: dict[str, str] = {}
        subject = self.topology.event_subject(definition)
        # A PRODUCER span stands for the message; its context travels with the event, so the
        # consumer's span becomes its child in the same trace. Without a tracer provider no span
        # is built, and the trace context the work came with, if any, is passed on.
        span = (
            tracer.start_as_current_span(
                f"{definition.subject} create",
                kind=trace.SpanKind.PRODUCER,
                attributes={
                    "messaging.system": "nats",
                    "messaging.destination.name": subject,
                    "messaging.message.id": event_id,
                },
            )
            if tracing_enabled()
            else contextlib.nullcontext()
        )
        with span:
            propagate.inject(carrier)
        envelope = envelope_pb2.EventEnvelope(
            event_id=event_id,
            aggregate_id=aggregate_id,
            aggregate_type=definition.aggregate_type,
            event_type=definition.event_type,
            event_version=definition.version,
            source=self.source,
            metadata=envelope_pb2.EventMetadata(
                correlation_id=flow.correlation_id,
                causation_id=flow.causation_id,
                user_id=flow.user_id,
                trace=envelope_pb2.TraceContext(
                    traceparent=carrier.get(H_TRACEPARENT, ""),
                    tracestate=carrier.get(H_TRACESTATE, ""),
                ),
            ),
        )
        envelope.occurred_at.FromDatetime(moment)
        envelope.payload.Pack(event)
        out = OutgoingEvent(
            event_id=event_id,
            event_type=definition.event_type,
            aggregate_id=aggregate_id,
            subject=subject,
            headers=headers_for(envelope, carrier, moment),
            body=envelope.SerializeToString(),
        )
        if ttl_s is not None:
            out.headers[H_TTL] = f"{max(1, math.ceil(ttl_s))}s"
        if (size := encoded_size(out)) > MAX_EVENT_BYTES:
            raise EventTooLargeError(
                f"{definition.event_type} of {definition.aggregate_type} {aggregate_id[:100]} is"
                f" {size:,} bytes encoded, over the limit of {MAX_EVENT_BYTES:,}"
            )
        return out

    def decode(self, body: bytes) -> IncomingEvent:
        """Parse an envelope and unpack its payload into the declared message class."""
        try:
            envelope = envelope_pb2.EventEnvelope.FromString(body)
        except DecodeError as exc:
            raise EventDecodeError(f"body is not an EventEnvelope: {exc}") from exc
        if not envelope.event_id or not envelope.event_type or not envelope.payload.type_url:
            raise EventDecodeError("envelope lacks event_id, event_type or payload")
        if not _is_uuid(envelope.event_id):
            raise EventDecodeError(f"event_id {envelope.event_id[:64]!r} is not a UUID")
        try:
            definition = self.registry.get(envelope.event_type, envelope.event_version)
        except RegistryError as exc:
            raise UnknownEventError(str(exc)) from exc
        payload = definition.message_class()
        if not envelope.payload.Is(definition.descriptor):
            raise EventDecodeError(f"payload is {envelope.payload.type_url}, not {definition.full_name}")
        try:
            envelope.payload.Unpack(payload)
        except DecodeError as exc:
            raise EventDecodeError(f"payload does not decode as {definition.full_name}: {exc}") from exc
        return IncomingEvent(envelope, definition, payload)


def headers_for(
    envelope: envelope_pb2.EventEnvelope, trace: Mapping[str, str], occurred_at: datetime | None = None
) -> dict[str, str]:
    """The CloudEvents NATS binding headers of an envelope, plus dedup id and trace context."""
    moment = occurred_at or envelope.occurred_at.ToDatetime(tzinfo=UTC)
    headers = {
        H_SPEC: "1.0",
        H_ID: envelope.event_id,
        H_TYPE: envelope.event_type,
        H_SOURCE: f"/a4co/{envelope.source}",
        H_TIME: _rfc3339(moment),
        H_SUBJECT: envelope.aggregate_id,
        H_SCHEMA: f"{envelope.payload.type_url.rsplit('/', 1)[-1]};v{envelope.event_version}",
        "content-type": CONTENT_TYPE,
        H_MSG_ID: envelope.event_id,
    }
    headers.update({k: v for k, v in trace.items() if k in (H_TRACEPARENT, H_TRACESTATE) and v})
    return headers
