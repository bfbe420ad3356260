"""Operating the dead-letter stream: list, show, analyse by failure pattern, replay, discard.

A dead letter keeps the original body and headers, plus `a4co-dlq-*` headers that say which
consumer gave up, why, after how many deliveries, and where the event came from. A message too
large to keep whole with those headers (published near the server's limit by something else)
keeps its headers only, and `a4co-dlq-body-omitted` gives its body's size: a replay then reads the
original from its stream, while the stream holds it. A replay
publishes the original event again on its subject, aimed at the consumer that failed (others
skip it, and their inboxes would drop it anyway), with `retry_count` raised in its envelope and a
fresh `Nats-Msg-Id` so that JetStream's duplicate window does not swallow it; the dead letter is
deleted once the replay is acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections import Counter
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field, replace

from google.protobuf.message import DecodeError
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from a4co.events.v1 import envelope_pb2
from services.platform.events.codec import message_size
from services.platform.events.consumer import (
    H_DLQ_CONSUMER,
    H_DLQ_DELIVERIES,
    H_DLQ_ERROR,
    H_DLQ_EVENT_TYPE,
    H_DLQ_OMITTED,
    H_DLQ_REASON,
    H_DLQ_SEQ,
    H_DLQ_STREAM,
    H_DLQ_SUBJECT,
    H_DLQ_TIME,
    H_REPLAY_FOR,
)
from services.platform.events.streams import raise_if_stream_missing, read_stream
from services.platform.events.topology import DLQ_STREAM, Topology

# How many single letters `discard` deletes at once: requests in flight on the one connection, each
# a few hundred microseconds of the server's time (5,000 letters: docs/operations.md).
DELETES_IN_FLIGHT = 64

_VOLATILE = [
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I), "<uuid>"),
    (re.compile(r"\b0x[0-9a-f]+\b", re.I), "<hex>"),
    (re.compile(r"'[^']*'|\"[^\"]*\""), "<str>"),
    (re.compile(r"\d+(\.\d+)?"), "<n>"),
]


def error_pattern(error: str) -> str:
    """The shape of an error message: ids, strings and numbers replaced by placeholders."""
    for pattern, placeholder in _VOLATILE:
        error = pattern.sub(placeholder, error)
    return error[:200]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message in the dead-letter stream."""

    seq: int
    event_id: str
    event_type: str
    consumer: str
    reason: str
    error: str
    deliveries: int
    original_subject: str
    original_stream: str
    original_seq: int
    dead_lettered_at: str
    headers: dict[str, str]
    body: bytes
    body_omitted: int | None = None  # the original body's size, when it was not kept

    def error_within(self, limit: int) -> str:
        """The error, cut to `limit` characters with "…" where it is longer (for a listing)."""
        return self.error if len(self.error) <= limit else self.error[: limit - 1] + "…"

    def summary(self) -> dict[str, object]:
        """The dead letter without its body, for listings."""
        return {
            "seq": self.seq,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "consumer": self.consumer,
            "reason": self.reason,
            "deliveries": self.deliveries,
            "error": self.error,
            "original_subject": self.original_subject,
            "dead_lettered_at": self.dead_lettered_at,
            "body_omitted": self.body_omitted,
        }


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """Which dead letters an operation applies to; empty fields match everything."""

    seqs: frozenset[int] = frozenset()
    consumer: str = ""
    event_type: str = ""
    reason: str = ""

    def matches(self, letter: DeadLetter) -> bool:
        """Whether a dead letter passes every set criterion."""
        return (
            (not self.seqs or letter.seq in self.seqs)
            and (not self.consumer or letter.consumer == self.consumer)
            and (not self.event_type or letter.event_type == self.event_type)
            and (not self.reason or letter.reason == self.reason)
        )


@dataclass(frozen=True, slots=True)
class PatternStats:
    """How many dead letters share one failure pattern."""

    event_type: str
    consumer: str
    reason: str
    pattern: str
    count: int
    first_at: str
    last_at: str


@dataclass(slots=True)
class ReplayReport:
    """What a replay did (or, dry, would do)."""

    replayed: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    dry_run: bool = False


def _letter(seq: int, headers: dict[str, str], body: bytes) -> DeadLetter:
    return DeadLetter(
        seq=seq,
        event_id=headers.get("ce-id", ""),
        event_type=headers.get(H_DLQ_EVENT_TYPE) or headers.get("ce-type", "unknown"),
        consumer=headers.get(H_DLQ_CONSUMER, ""),
        reason=headers.get(H_DLQ_REASON, ""),
        error=headers.get(H_DLQ_ERROR, ""),
        deliveries=int(headers.get(H_DLQ_DELIVERIES, "0") or 0),
        original_subject=headers.get(H_DLQ_SUBJECT, ""),
        original_stream=headers.get(H_DLQ_STREAM, ""),
        original_seq=int(headers.get(H_DLQ_SEQ, "0") or 0),
        dead_lettered_at=headers.get(H_DLQ_TIME, ""),
        headers=headers,
        body=body,
        body_omitted=int(headers[H_DLQ_OMITTED]) if H_DLQ_OMITTED in headers else None,
    )


def replay_message(letter: DeadLetter, *, broadcast: bool = False) -> tuple[dict[str, str], bytes]:
    """The headers and body that republish a dead letter's original event."""
    headers = {k: v for k, v in letter.headers.items() if not k.startswith("a4co-dlq-")}
    headers["Nats-Msg-Id"] = f"{letter.event_id or letter.seq}:replay:{letter.seq}"
    if not broadcast and letter.consumer:
        headers[H_REPLAY_FOR] = letter.consumer
    body = letter.body
    try:
        envelope = envelope_pb2.EventEnvelope.FromString(body)
    except DecodeError:
        return headers, body  # an undecodable body is replayed as it was
    envelope.metadata.retry_count += 1
    return headers, envelope.SerializeToString()


class DeadLetterNotFoundError(LookupError):
    """No dead letter has that sequence (never, or replayed or discarded since)."""


class DeadLetterQueue:
    """The dead-letter stream of one deployment."""

    def __init__(self, js: JetStreamContext, topology: Topology) -> None:
        self.js = js
        self.topology = topology
        self.stream = topology.stream(DLQ_STREAM)

    async def depth(self) -> int:
        """How many dead letters wait."""
        info = await self.js.stream_info(self.stream)
        return int(info.state.messages)

    async def letters(self, where: DeadLetterFilter | None = None) -> AsyncGenerator[DeadLetter, None]:
        """Every dead letter matching `where`, oldest first."""
        where = where or DeadLetterFilter()
        async with contextlib.aclosing(read_stream(self.js, self.topology, DLQ_STREAM)) as messages:
            async for msg in messages:
                letter = _letter(msg.metadata.sequence.stream, dict(msg.headers or {}), msg.data)
                if where.matches(letter):
                    yield letter

    async def browse(self, where: DeadLetterFilter | None = None, limit: int = 100) -> list[DeadLetter]:
        """Up to `limit` dead letters matching `where`, oldest first."""
        found = []
        async with contextlib.aclosing(self.letters(where)) as letters:  # its reader goes at once
            async for letter in letters:
                found.append(letter)
                if len(found) >= limit:
                    break
        return found

    async def get(self, seq: int) -> DeadLetter:
        """One dead letter by its sequence in the dead-letter stream."""
        try:
            raw = await self.js.get_msg(self.stream, seq=seq)
        except NotFoundError as exc:
            raise_if_stream_missing(exc, DLQ_STREAM)
            raise DeadLetterNotFoundError(f"no dead letter {seq} in {self.stream}") from None
        return _letter(seq, dict(raw.headers or {}), raw.data or b"")

    async def stats(self, where: DeadLetterFilter | None = None) -> list[PatternStats]:
        """Dead letters grouped by event type, consumer, reason and error pattern, most first."""
        counts: Counter[tuple[str, str, str, str]] = Counter()
        first: dict[tuple[str, str, str, str], str] = {}
        last: dict[tuple[str, str, str, str], str] = {}
        async for letter in self.letters(where):
            key = (letter.event_type, letter.consumer, letter.reason, error_pattern(letter.error))
            counts[key] += 1
            first.setdefault(key, letter.dead_lettered_at)
            last[key] = letter.dead_lettered_at
        return [
            PatternStats(*key, count=n, first_at=first[key], last_at=last[key])
            for key, n in counts.most_common()
        ]

    async def replay(
        self,
        where: DeadLetterFilter | None = None,
        *,
        dry_run: bool = False,
        rate_per_s: float = 50.0,
        broadcast: bool = False,
    ) -> ReplayReport:
        """Republish matching dead letters (at most `rate_per_s` a second), then delete them."""
        report = ReplayReport(dry_run=dry_run)
        interval = 1.0 / rate_per_s if rate_per_s > 0 else 0.0
        for letter in [x async for x in self.letters(where)]:
            if dry_run:
                report.replayed.append(letter.seq)
                continue
            if not letter.original_subject:
                report.failed[letter.seq] = "no original subject"
                continue
            if letter.body_omitted is not None:
                at = f"message {letter.original_seq} of stream {letter.original_stream}"
                try:
                    original = await self.js.get_msg(letter.original_stream, seq=letter.original_seq)
                except NotFoundError:
                    report.failed[letter.seq] = (
                        f"its body was not kept, and its original ({at}) is no longer there"
                    )
                    continue
                letter = replace(letter, headers=dict(original.headers or {}), body=original.data or b"")
            headers, body = replay_message(letter, broadcast=broadcast)
            size = message_size(body, headers)
            if size > self.js._nc.max_payload:
                report.failed[letter.seq] = f"too large to publish again ({size:,} bytes)"
                continue
            try:
                await self.js.publish(letter.original_subject, body, headers=headers)
            except Exception as exc:  # report and go on with the next one
                report.failed[letter.seq] = f"{type(exc).__name__}: {exc}"
                continue
            await self._delete(letter.seq)  # gone meanwhile (another discard): replayed all the same
            report.replayed.append(letter.seq)
            if interval:
                await asyncio.sleep(interval)  # the rate limit itself, not a wait for a condition
        return report

    async def discard(self, where: DeadLetterFilter | None = None) -> list[int]:
        """Delete matching dead letters for good; returns their sequences. The letters that match
        from the oldest on, up to the first that does not (all of them, with no criterion), go in
        one purge up to the last of them, so a letter dead-lettered since stays; each of the
        others is deleted on its own, `DELETES_IN_FLIGHT` at a time. A letter that went meanwhile
        (another operator's discard or replay) is not among those returned."""
        where = where or DeadLetterFilter()
        letters = [(letter.seq, where.matches(letter)) async for letter in self.letters()]
        gone = [seq for seq, matches in letters if matches]
        leading = next((i for i, (_, matches) in enumerate(letters) if not matches), len(letters))
        if leading:  # gone's first `leading`
            await self.js.purge_stream(self.stream, seq=letters[leading - 1][0] + 1)  # those before seq
        window = asyncio.Semaphore(DELETES_IN_FLIGHT)

        async def delete(seq: int) -> bool:
            async with window:
                return await self._delete(seq)

        deleted = await asyncio.gather(*(delete(seq) for seq in gone[leading:]))
        return gone[:leading] + [seq for seq, done in zip(gone[leading:], deleted, strict=True) if done]

    async def _delete(self, seq: int) -> bool:
        """Delete one letter, marked as deleted rather than overwritten where it lies (NATS's
        `no_erase`, as a purge leaves its messages: decision 72); False when it is not there."""
        request = json.dumps({"seq": seq, "no_erase": True}).encode()
        try:
            await self.js._api_request(f"{self.js._prefix}.STREAM.MSG.DELETE.{self.stream}", request)
        except APIError:
            # JetStream says a missing message in more than one way ("sequence 2 not found", "no
            # message found"): asked whether it is there, it answers in one.
            with contextlib.suppress(DeadLetterNotFoundError):
                await self.get(seq)
                raise
            return False
        return True
