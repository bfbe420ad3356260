"""`a4co status`: health of each service, the dependencies it serves on without, the circuits it holds
open, stream and consumer lag, DLQ depth, outbox backlog."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

import asyncpg
import grpc
import nats.errors
import typer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError, ServiceUnavailableError
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from services.cli.connection import (
    DatabaseUnansweredError,
    NatsUnansweredError,
    NatsUrl,
    Prefix,
    Target,
    client_tls,
    database,
    database_shown,
    jetstream,
    running_deployment,
)
from services.platform.events.credentials import redact
from services.platform.events.registry import load_registry
from services.platform.events.topology import DLQ_STREAM, Topology
from services.platform.grpc import tls
from services.platform.resilience import BreakerState

console = Console()
# How long `status` waits for PostgreSQL to connect, and then for each answer.
DATABASE_TIMEOUT_S = 3.0
ADDRESSES = "make run writes their addresses in $A4CO_DATA_DIR/addresses.json, .data/ by default"


@dataclass
class Status:
    """Everything `status` reports."""

    services: dict[str, str] = field(default_factory=dict)
    streams: dict[str, int] = field(default_factory=dict)
    consumers: dict[str, dict[str, int]] = field(default_factory=dict)
    dlq_depth: int = 0
    outbox: dict[str, int] = field(default_factory=dict)
    # The dependencies each service's last health check found down (its `a4co_dependency_up`):
    # health stays SERVING without NATS and Redis.
    down: dict[str, list[str]] = field(default_factory=dict)
    # The services whose metrics did not answer: what they serve without is not known.
    metrics_unreachable: list[str] = field(default_factory=list)
    # When the TLS certificate each service serves expires (Unix time), as it last read it
    # (decisions 58 and 59); none for a plaintext service.
    certificate_expiry: dict[str, float] = field(default_factory=dict)
    # On a NATS cluster (decision 64), the servers keeping each stream: its leader ("" while it
    # has none) and each follower as "current", "behind" or "offline".
    stream_servers: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The streams JetStream did not answer for (a cluster electing their leader, or without its
    # majority).
    streams_unanswered: list[str] = field(default_factory=list)
    # How many times each service's connection to NATS was lost and made again since it started
    # (its `a4co_nats_reconnections_total`).
    nats_reconnections: dict[str, int] = field(default_factory=dict)
    # How many publishes and subscriptions NATS refused each service for its user's permissions
    # since it started (its `a4co_nats_permission_violations_total`, decision 68).
    nats_refusals: dict[str, int] = field(default_factory=dict)
    # The circuits each service holds open or half-open towards its peers (its
    # `a4co_circuit_breaker_state`): peer → "open" or "half-open"; closed ones are left out.
    circuits: dict[str, dict[str, str]] = field(default_factory=dict)
    # Why the streams, consumers and dead letters are not known: NATS could not be reached or did
    # not answer in time ("" when it answered). Said instead of them when services are known.
    nats_unanswered: str = ""
    # Why the outbox backlog is not known: PostgreSQL (named) did not answer within
    # DATABASE_TIMEOUT_S, could not be reached, or refused; "" when it answered.
    database_unanswered: str = ""


def dependencies_down(exposition: str) -> list[str]:
    """The dependencies a service's metrics say are down, from its Prometheus text."""
    return sorted(
        sample.labels["dependency"]
        for family in text_string_to_metric_families(exposition)
        if family.name == "a4co_dependency_up"
        for sample in family.samples
        if sample.value == 0
    )


def circuits_not_closed(exposition: str) -> dict[str, str]:
    """The peers a service's circuit breakers refuse calls to, "open", or let one trial call
    through, "half-open", from its Prometheus text."""
    states = {BreakerState.OPEN: "open", BreakerState.HALF_OPEN: "half-open"}
    return {
        sample.labels["peer"]: states[BreakerState(int(sample.value))]
        for family in text_string_to_metric_families(exposition)
        if family.name == "a4co_circuit_breaker_state"
        for sample in family.samples
        if int(sample.value) in states
    }


def certificate_expiry(exposition: str) -> float | None:
    """When the certificate a service serves expires, from its Prometheus text; None in plaintext."""
    for family in text_string_to_metric_families(exposition):
        if family.name == "a4co_tls_certificate_expiry_timestamp_seconds":
            return min((sample.value for sample in family.samples), default=None)
    return None


def counted(exposition: str, counter: str) -> int:
    """A counter's total over its labels (`<counter>_total`), from a service's Prometheus text."""
    return sum(
        int(sample.value)
        for family in text_string_to_metric_families(exposition)
        if family.name == counter  # the parser drops a counter's _total
        for sample in family.samples
        if sample.name == f"{counter}_total"
    )


def nats_reconnections(exposition: str) -> int:
    """How many times a service made its NATS connection again, from its Prometheus text."""
    return counted(exposition, "a4co_nats_reconnections")


def nats_refusals(exposition: str) -> int:
    """How many publishes and subscriptions NATS refused a service, from its Prometheus text."""
    return counted(exposition, "a4co_nats_permission_violations")


async def scrape_metrics(metrics_port: int, context: ssl.SSLContext | None) -> str | None:
    """A service's metrics (over HTTPS with `context`, `tls.client_ssl_context` of the caller's
    files, as the services serve them then); None when they do not answer."""

    def scrape() -> str:
        url = f"{'https' if context else 'http'}://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=2, context=context) as response:  # noqa: S310 (http or https)
            return str(response.read().decode())

    try:
        return await asyncio.to_thread(scrape)
    except OSError:
        return None


async def service_health(address: str, caller: tls.Tls) -> str:
    """SERVING, NOT_SERVING, or UNREACHABLE."""
    async with tls.channel(address, caller) as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)
        try:
            response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.aio.AioRpcError:
            return "UNREACHABLE"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


async def streams_and_consumers(js: JetStreamContext, topology: Topology, status: Status) -> None:
    """Messages per stream, pending and unacknowledged per durable consumer, the DLQ's depth."""
    for stream in load_registry().streams:
        name = topology.stream(stream.name)
        try:
            info = await js.stream_info(name)
            consumers = [] if stream.name == DLQ_STREAM else await js._jsm.consumers_info(name)
        except NotFoundError:
            continue  # not created yet: nothing to show
        except (ServiceUnavailableError, nats.errors.TimeoutError):
            status.streams_unanswered.append(stream.name)
            continue
        status.streams[stream.name] = int(info.state.messages)
        if (info.config.num_replicas or 1) > 1 and info.cluster is not None:
            status.stream_servers[stream.name] = {
                "leader": info.cluster.leader or "",
                "followers": {
                    str(peer.name): "offline" if peer.offline else "current" if peer.current else "behind"
                    for peer in info.cluster.replicas or []
                },
            }
        if stream.name == DLQ_STREAM:
            status.dlq_depth = int(info.state.messages)
            continue
        for consumer in consumers:
            if not consumer.config.durable_name:
                continue  # someone's `events tail`, not a service
            status.consumers[consumer.name] = {
                "pending": int(consumer.num_pending or 0),
                "unacknowledged": int(consumer.num_ack_pending or 0),
                "redelivered": int(consumer.num_redelivered or 0),
            }


async def outbox_backlog(database_url: str, topology: Topology, services: list[str], status: Status) -> None:
    """Events committed and not yet published, per service; when PostgreSQL does not answer (a
    server stopped or stalled, which is when an operator asks), why, in `database_unanswered`."""
    try:
        async with database(database_url, DATABASE_TIMEOUT_S) as conn:
            for service in services:
                schema = topology.schema(service)
                exists = await conn.fetchval("SELECT to_regclass($1)", f'"{schema}".outbox')
                if exists:
                    count = await conn.fetchval(f'SELECT count(*) FROM "{schema}".outbox')  # noqa: S608
                    status.outbox[service] = int(count)
    except (TimeoutError, DatabaseUnansweredError):  # to connect, or to answer
        why = f"no answer within {DATABASE_TIMEOUT_S:g} s"
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        why = str(error) or type(error).__name__
    else:
        return
    status.database_unanswered = f"PostgreSQL at {database_shown(database_url)}: {why}"


async def collect(target: Target) -> Status:
    """Gather the status of the running deployment."""
    caller = client_tls()
    running = running_deployment()
    status = Status()
    services = {name: s["grpc"] for name, s in running.get("services", {}).items()}
    healths = await asyncio.gather(*(service_health(a, caller) for a in services.values()))
    status.services = dict(zip(services, healths, strict=True))
    ports = {n: s["metrics_port"] for n, s in running.get("services", {}).items() if s.get("metrics_port")}
    context = tls.client_ssl_context(caller)  # the files read once for every scrape
    expositions = await asyncio.gather(*(scrape_metrics(p, context) for p in ports.values()))
    for name, exposition in zip(ports, expositions, strict=True):
        if exposition is None:
            status.metrics_unreachable.append(name)
            continue
        if down := dependencies_down(exposition):
            status.down[name] = down
        if circuits := circuits_not_closed(exposition):
            status.circuits[name] = circuits
        if (expires := certificate_expiry(exposition)) is not None:
            status.certificate_expiry[name] = expires
        status.nats_reconnections[name] = nats_reconnections(exposition)
        status.nats_refusals[name] = nats_refusals(exposition)
    try:
        async with jetstream(target) as js:
            await streams_and_consumers(js, target.topology, status)
    except NatsUnansweredError as exc:
        if not status.services:
            raise  # nothing of the deployment is known without it
        status.nats_unanswered = exc.message
    if url := running.get("servers", {}).get("A4CO_DATABASE_URL"):
        await outbox_backlog(url, target.topology, list(services), status)
    return status


def status(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    nats_url: NatsUrl = None,
    prefix: Prefix = None,
) -> None:
    """Health of each service, stream and consumer lag, DLQ depth, outbox backlog.

    Exits 1 when a service is not SERVING, or NATS or PostgreSQL does not answer (a script's or a
    probe's test), 2 when nothing of the deployment is known: no service, and NATS unreachable or
    without its streams."""
    target = Target.resolve(nats_url, prefix)
    result = asyncio.run(collect(target))
    if not (result.services or result.streams or result.streams_unanswered):
        # Empty tables and "dead letters: 0" would pass for a healthy deployment.
        raise typer.BadParameter(
            f"no service of the deployment is known here ({ADDRESSES}) and NATS at"
            f" {redact(target.nats_url)} holds none of its streams: is it running, and is its"
            " prefix --prefix / A4CO_PREFIX?"
        )
    report(result, as_json)
    unwell = sorted(name for name, health in result.services.items() if health != "SERVING")
    if unwell:
        typer.echo(f"not serving: {', '.join(unwell)}", err=True)
    if result.nats_unanswered:
        typer.echo(f"NATS not answering: {result.nats_unanswered}", err=True)
    if result.database_unanswered:
        typer.echo(f"database not answering: {result.database_unanswered}", err=True)
    if unwell or result.nats_unanswered or result.database_unanswered:
        raise typer.Exit(1)


def days_left(expires: float | None) -> str:
    """A certificate's time left as the table shows it: red under CERTIFICATE_WARNING_DAYS."""
    if expires is None:
        return "—"
    days = (expires - time.time()) / 86_400
    text = f"expires in {days:.0f} d" if days >= 0 else f"expired {-days:.0f} d ago"
    return f"[red]{text}[/red]" if days < tls.CERTIFICATE_WARNING_DAYS else text


def circuits_shown(circuits: dict[str, str]) -> str:
    """A service's circuits that are not closed, as the table shows them: open ones in red."""
    if not circuits:
        return "—"
    colour = {"open": "red", "half-open": "yellow"}
    return ", ".join(
        f"[{colour[state]}]{peer} {state}[/{colour[state]}]" for peer, state in sorted(circuits.items())
    )


def report(result: Status, as_json: bool) -> None:
    """Print `result` as JSON or as tables."""
    if as_json:
        typer.echo(json.dumps(asdict(result), indent=2))
        return
    columns = ["service", "health", "outbox backlog", "serving without"]
    reconnected = any(result.nats_reconnections.values())  # shown once a connection moved
    if reconnected:
        columns.append("NATS reconnections")
    refused = any(result.nats_refusals.values())  # shown once NATS refused a service something
    if refused:
        columns.append("NATS refusals")
    if result.circuits:  # shown while a circuit is not closed
        columns.append("circuits")
    if result.certificate_expiry:
        columns.append("certificate")
    if not result.services:  # a deployment make run did not start: its streams only
        console.print(f"services: not known here ({ADDRESSES})")
    services = Table(*columns)
    for name, health in result.services.items():
        colour = "green" if health == "SERVING" else "red"
        without = ", ".join(result.down.get(name, [])) or "—"
        if name in result.metrics_unreachable:
            without = "[yellow]unknown: metrics unreachable[/yellow]"
        backlog = "[yellow]unknown[/yellow]" if result.database_unanswered else "—"
        row = [name, f"[{colour}]{health}[/{colour}]", str(result.outbox.get(name, backlog)), without]
        if reconnected:
            row.append(str(result.nats_reconnections.get(name, "—")))
        if refused:
            count = result.nats_refusals.get(name)
            row.append("—" if count is None else f"[red]{count}[/red]" if count else "0")
        if result.circuits:
            row.append(circuits_shown(result.circuits.get(name, {})))
        if result.certificate_expiry:
            row.append(days_left(result.certificate_expiry.get(name)))
        services.add_row(*row)
    if result.services:
        console.print(services)
    if result.nats_unanswered:
        console.print(
            f"[red]streams, consumers and dead letters unknown: {escape(result.nats_unanswered)}[/red]"
        )
    else:
        print_streams(result)
    if result.database_unanswered:
        console.print(f"[red]outbox backlog unknown: {escape(result.database_unanswered)}[/red]")


def print_streams(result: Status) -> None:
    """What NATS said of the deployment's streams, their consumers and the dead letters."""
    consumers = Table("consumer", "pending", "unacknowledged", "redelivered")
    for name, c in sorted(result.consumers.items()):
        consumers.add_row(name, str(c["pending"]), str(c["unacknowledged"]), str(c["redelivered"]))
    console.print(consumers)
    streams = ", ".join(f"{k} {v}" for k, v in sorted(result.streams.items()))
    console.print(f"streams: {streams}")
    if result.stream_servers:
        placement = Table("stream", "leader", "followers")
        for name, kept in sorted(result.stream_servers.items()):
            followers = ", ".join(
                f"{peer} ({state})" if state == "current" else f"[red]{peer} ({state})[/red]"
                for peer, state in sorted(kept["followers"].items())
            )
            placement.add_row(name, kept["leader"] or "[red]none[/red]", followers)
        console.print(placement)
    if result.streams_unanswered:
        unanswered = ", ".join(result.streams_unanswered)
        console.print(f"[red]JetStream did not answer for: {unanswered}[/red]")
    console.print(f"dead letters: {'[red]' if result.dlq_depth else ''}{result.dlq_depth}")
