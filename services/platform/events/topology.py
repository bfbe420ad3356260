"""Names on the servers: streams, subjects and durable consumers, under an optional prefix.

The contracts declare unprefixed names (`ORDERS`, `a4co.orders.order.created`); a prefix lets one
NATS server hold several isolated deployments, which is how each test gets its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.platform.events.registry import EventDef, StreamDef

DLQ_STREAM = "DLQ"


@dataclass(frozen=True, slots=True)
class Topology:
    """Maps declared names to the names used on the servers."""

    prefix: str = ""

    def stream(self, name: str) -> str:
        """A stream's name on the server."""
        return f"{self.prefix}_{name}" if self.prefix else name

    def subject(self, subject: str) -> str:
        """A declared subject (or filter) on the server."""
        return f"{self.prefix}.{subject}" if self.prefix else subject

    def unprefixed(self, subject: str) -> str:
        """The declared subject of a subject on the server."""
        head = f"{self.prefix}."
        return subject[len(head) :] if self.prefix and subject.startswith(head) else subject

    def stream_subjects(self, stream: StreamDef) -> list[str]:
        """A stream's subject filters on the server."""
        return [self.subject(s) for s in stream.subjects]

    def event_subject(self, event: EventDef) -> str:
        """Where an event is published."""
        return self.subject(event.subject)

    def durable(self, service: str, stream: str) -> str:
        """The durable consumer shared by every replica of `service` on `stream`."""
        return f"{self.prefix}_{service}_{stream}" if self.prefix else f"{service}_{stream}"

    def dead_letter_subject(self, service: str, original_subject: str) -> str:
        """Where a dead letter of `service` for an event from `original_subject` goes."""
        return self.subject(f"a4co.dlq.{service}.{self.unprefixed(original_subject)}")

    def inbox(self, service: str) -> str:
        """The prefix of `service`'s inboxes, where JetStream answers it: its own, so that NATS
        permissions keep one service from hearing another's answers (decision 68). One token,
        `<prefix>_<service>` under a prefix (neither holds an underscore), so that no deployment's
        inboxes fall under another's, whatever the names: `_INBOX.orders.>` is not
        `_INBOX.orders_payments.>`."""
        return f"_INBOX.{self.prefix}_{service}" if self.prefix else f"_INBOX.{service}"

    def schema(self, service: str) -> str:
        """The database schema a service owns."""
        return f"{self.prefix}_{service}" if self.prefix else service
