"""Delivery transports: a local file (the default) and SMTP."""

from __future__ import annotations

import asyncio
import json
import os
import smtplib
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol, TextIO

from services.platform.resilience import CircuitBreaker, exported


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message ready to leave: to whom, and what."""

    recipient_id: str
    email: str
    title: str
    body: str


class Transport(Protocol):
    """Hands a message to the outside world."""

    async def send(self, message: Outgoing) -> None:
        """Deliver one message."""


class GuardedTransport:
    """A transport behind the strategy's circuit breaker (5 failures within 60 s open it for 30 s):
    while the mail server is down, sends fail at once, to be tried again later
    (`handlers.deliver_due`), instead of each waiting for its timeout while the events behind it wait
    for the consumer. The breaker's state is `a4co_circuit_breaker_state{peer="mail"}`."""

    def __init__(self, inner: Transport, breaker: CircuitBreaker | None = None) -> None:
        self.inner = inner
        self.breaker = exported(breaker or CircuitBreaker("mail"))

    async def send(self, message: Outgoing) -> None:
        """Send, unless the circuit is open (BreakerOpenError)."""
        self.breaker.before_call()
        try:
            await self.inner.send(message)
        except Exception as exc:
            self.breaker.record_failure(f"{type(exc).__name__}: {exc}")
            raise
        except BaseException:  # cancelled (the service stopping): nothing learnt of the server
            self.breaker.record_abandoned()
            raise
        self.breaker.record_success()


class FileTransport:
    """Appends each message as a JSON line to `<directory>/outbox.jsonl`; for development."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "outbox.jsonl"
        self._file: TextIO | None = None
        self._opened = (0, 0)  # the open file's device and inode

    async def send(self, message: Outgoing) -> None:
        """Append the message.

        A line of a few hundred bytes lands in the page cache in microseconds, so it is written
        from the event loop: a thread hop and an open/close per message cost about a quarter of
        the notifications service's CPU in the saga benchmark.
        """
        line = json.dumps(
            {"time": datetime.now(UTC).isoformat(), "to": message.email or message.recipient_id,
             "subject": message.title, "body": message.body},
            ensure_ascii=False,
        )  # fmt: skip
        if self._file is None or self._file.closed or not self._still_there():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
            stat = os.fstat(self._file.fileno())
            self._opened = (stat.st_dev, stat.st_ino)
        self._file.write(line + "\n")
        self._file.flush()

    def _still_there(self) -> bool:
        """Whether the open file is still the one at `path`: a developer who deletes or moves it
        gets a new one, where lines had gone on into the deleted file (one stat, about 1 µs)."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return False
        return (stat.st_dev, stat.st_ino) == self._opened


class SmtpTransport:
    """Sends e-mail through an SMTP relay (stdlib smtplib, in a thread)."""

    def __init__(self, host: str, port: int, sender: str) -> None:
        self.host, self.port, self.sender = host, port, sender

    async def send(self, message: Outgoing) -> None:
        """Send one e-mail; users without an address are skipped."""
        if not message.email:
            return
        email = EmailMessage()
        email["From"], email["To"], email["Subject"] = self.sender, message.email, message.title
        email.set_content(message.body)
        await asyncio.to_thread(self._send, email)

    def _send(self, email: EmailMessage) -> None:
        with smtplib.SMTP(self.host, self.port, timeout=10) as smtp:
            smtp.send_message(email)
