"""What each NATS user of a deployment may publish and subscribe to, derived from the contracts
and the subscription tables (decision 68).

A service publishes its own streams' events and its own dead letters, declares the streams it
uses (those it produces, those it consumes, and the dead-letter stream), manages and reads its
own durable consumers, acknowledges their messages, and hears JetStream's answers on an inbox of
its own (`Topology.inbox`). Nothing else: not another context's subjects, not another service's
consumer, not another's replies. These lists follow what nats-py 2.16 asks of JetStream for what
the platform does (`streams.py`, `outbox.py`, `consumer.py`, `pull.py`, the health check); a
change there that asks for something new shows as a permissions violation in the tests that run
the services under these permissions.

Two more users: the `a4co` command (an operator's: every JetStream request on the deployment's
own streams, the deployment's subjects, and replays), and a reader of the events, as another
team's client reads them (`clients/node/events.mjs`): it makes and reads consumers of its own on
every stream, and may neither touch the services' durable consumers nor hear their inboxes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from services.platform.events.registry import EventRegistry
from services.platform.events.topology import Topology

JS_API = "$JS.API"
# The producer the contracts name for the dead-letter stream: every service writes to it.
EVERY_SERVICE = "platform"
COMMAND = "a4co"
READER = "reader"
# In operator mode each user's JWT holds its permissions and is sent in the CONNECT line, which
# nats-server caps at 4 KB by default (`max_control_line`); the reader's JWT is larger (8.6 KB;
# 13.2 KB under a 13-letter prefix, where orders' and notifications' pass 5 KB too), so the
# server's configuration needs a higher cap: this one.
JWT_CONTROL_LINE = 65536
# What the reader may ask of the account as a whole: its information and the streams' names (a
# client in another language finds a subscription's stream by subject). The command names its
# streams, so it asks only for the information: it cannot list another deployment's streams.
ACCOUNT_INFO = f"{JS_API}.INFO"
ACCOUNT_API = (ACCOUNT_INFO, f"{JS_API}.STREAM.NAMES", f"{JS_API}.STREAM.LIST")


@dataclass(frozen=True, slots=True)
class Permissions:
    """What the NATS user `user` may publish and subscribe to: allowed, minus denied."""

    user: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    publish_deny: tuple[str, ...] = ()
    subscribe_deny: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, dict[str, list[str]]]:
        """As NATS's configuration and user JWTs hold them: `{"publish": {"allow": [...]}, ...}`."""
        return {
            "publish": _allow_deny(self.publish, self.publish_deny),
            "subscribe": _allow_deny(self.subscribe, self.subscribe_deny),
        }


def _allow_deny(allow: tuple[str, ...], deny: tuple[str, ...]) -> dict[str, list[str]]:
    return {"allow": list(allow), **({"deny": list(deny)} if deny else {})}


def produced_streams(service: str, registry: EventRegistry) -> list[str]:
    """The declared streams `service` publishes to: its own, and the dead-letter stream."""
    return [s.name for s in registry.streams if s.producer in (service, EVERY_SERVICE)]


def streams_used(service: str, registry: EventRegistry, consumed: Iterable[str]) -> list[str]:
    """The declared streams `service` declares (creates or brings to their declared
    configuration): those it publishes to and those it consumes, in the registry's order."""
    used = {*produced_streams(service, registry), *consumed}
    return [s.name for s in registry.streams if s.name in used]


def _consumer_api(stream: str, durable: str) -> list[str]:
    """The JetStream requests of one durable pull consumer: made (nats-py asks DURABLE.CREATE of
    a durable without a name; CREATE is the same request since NATS 2.9), read, pulled, acked."""
    return [
        f"{JS_API}.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.{durable}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.{durable}.>",
        f"{JS_API}.CONSUMER.INFO.{stream}.{durable}",
        f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
    ]


def service_permissions(
    service: str, registry: EventRegistry, consumed: Iterable[str], topology: Topology
) -> Permissions:
    """What `service`, consuming the declared streams `consumed`, needs of NATS."""
    consumed = sorted(set(consumed))
    publish = [
        *(
            topology.subject(subject)
            for s in registry.streams
            if s.producer == service
            for subject in s.subjects
        ),
        topology.dead_letter_subject(service, ">"),
        f"{JS_API}.INFO",  # the health check (account info)
    ]
    for name in streams_used(service, registry, consumed):
        stream = topology.stream(name)
        publish += [f"{JS_API}.STREAM.{verb}.{stream}" for verb in ("INFO", "CREATE", "UPDATE")]
    for name in consumed:
        publish += _consumer_api(topology.stream(name), topology.durable(service, name))
    return Permissions(service, tuple(publish), (f"{topology.inbox(service)}.>",))


def _stream_api(stream: str) -> list[str]:
    """Every JetStream request on `stream` and its consumers: the stream's name is the API
    subject's third or fourth token (STREAM.INFO.<stream>, STREAM.MSG.GET.<stream>,
    DIRECT.GET.<stream>.<subject>, CONSUMER.CREATE.<stream>.<name>, CONSUMER.MSG.NEXT.<stream>.<name>)."""
    return [
        f"{JS_API}.*.*.{stream}",
        f"{JS_API}.*.*.{stream}.>",
        f"{JS_API}.*.*.*.{stream}",
        f"{JS_API}.*.*.*.{stream}.>",
    ]


def _service_inboxes(services: Iterable[str], topology: Topology) -> tuple[str, ...]:
    """The inboxes of the deployment's `services`, denied to the command and the reader: their own
    answers come on inboxes of their client's choosing (`_INBOX.>`), the services' are not theirs
    to hear (NATS delivers a wildcard subscription nothing that falls under a deny)."""
    return tuple(f"{topology.inbox(service)}.>" for service in sorted(services))


def command_permissions(
    registry: EventRegistry, consumers: Mapping[str, Iterable[str]], topology: Topology
) -> Permissions:
    """The `a4co` command's, an operator's: anything JetStream offers on the deployment's own
    streams (status, traces, the dead-letter queue, reading events, a stream's leader stepping
    down), the account's information but not the streams' names, the deployment's subjects (a
    replayed dead letter goes back to its subject), and its answers, not the services' (`consumers`
    names them). Not another deployment's
    streams on a shared NATS: their names differ by prefix, and each stream is named here (NATS
    has no wildcard for part of a token)."""
    publish = [ACCOUNT_INFO]
    for s in registry.streams:
        stream = topology.stream(s.name)
        publish += [*_stream_api(stream), f"$JS.ACK.{stream}.>", f"$JS.FC.{stream}.>"]
    return Permissions(
        COMMAND,
        (*publish, topology.subject("a4co.>")),
        ("_INBOX.>",),
        subscribe_deny=_service_inboxes(consumers, topology),
    )


def reader_permissions(
    registry: EventRegistry, consumers: Mapping[str, Iterable[str]], topology: Topology
) -> Permissions:
    """A client reading the events (every stream, the dead letters too) with consumers of its own,
    durable or not, but no access to the services' durable consumers: `consumers` maps each
    service to the declared streams it consumes."""
    publish = list(ACCOUNT_API)
    for s in registry.streams:
        stream = topology.stream(s.name)
        publish += [
            f"{JS_API}.STREAM.INFO.{stream}",
            f"{JS_API}.CONSUMER.*.{stream}",  # CREATE (ordered, ephemeral), LIST, NAMES
            f"{JS_API}.CONSUMER.*.{stream}.>",  # CREATE, INFO, DELETE
            f"{JS_API}.CONSUMER.*.*.{stream}.>",  # DURABLE.CREATE, MSG.NEXT
            f"$JS.ACK.{stream}.>",
            f"$JS.FC.{stream}.>",
        ]
    deny = []
    for service, streams in sorted(consumers.items()):
        for name in sorted(set(streams)):
            stream, durable = topology.stream(name), topology.durable(service, name)
            deny += [
                f"{JS_API}.CONSUMER.*.{stream}.{durable}",
                f"{JS_API}.CONSUMER.*.{stream}.{durable}.>",
                f"{JS_API}.CONSUMER.*.*.{stream}.{durable}",
                f"$JS.ACK.{stream}.{durable}.>",
            ]
    return Permissions(
        READER,
        tuple(publish),
        ("_INBOX.>",),
        publish_deny=tuple(deny),
        subscribe_deny=_service_inboxes(consumers, topology),
    )


def deployment_permissions(
    registry: EventRegistry, consumers: Mapping[str, Iterable[str]], topology: Topology
) -> list[Permissions]:
    """Every service's (`consumers` maps each to the declared streams it consumes, an empty list
    for one that consumes nothing), then the command's and the reader's."""
    return [
        *(service_permissions(s, registry, consumers[s], topology) for s in consumers),
        command_permissions(registry, consumers, topology),
        reader_permissions(registry, consumers, topology),
    ]


def _quoted(subjects: Iterable[str]) -> str:
    return ", ".join(f'"{s}"' for s in subjects)


def password_variable(user: str) -> str:
    """The environment variable of nats-server holding `user`'s password in `render_config`."""
    return f"A4CO_NATS_PASSWORD_{user.upper()}"


def render_config(
    permissions: Iterable[Permissions],
    topology: Topology,
    passwords: Mapping[str, str] | None = None,
    nkeys: Mapping[str, str] | None = None,
) -> str:
    """An `authorization` block for nats-server's configuration: one user per entry, each with the
    password of its `password_variable` in nats-server's environment (never in the file), with
    its password in `passwords` (`make run`'s NATS, whose file only its user reads), or known by
    the public key in `nkeys` (the user holding the seed, `A4CO_NATS_NKEY_FILE`)."""
    if nkeys is not None:
        how = ["# Each user is known by its nkey: the user holds the seed (A4CO_NATS_NKEY_FILE)."]
    elif passwords is not None:
        how = ["# The passwords were made for this run: this file is for its owner's eyes only."]
    else:
        how = [
            "# Each password is read from nats-server's environment, which it parses as a value of",
            "# this file: letters and digits, a letter first. (`--nkeys DIR`: nkeys, no passwords.)",
        ]
    out = [
        "# a4co's NATS users and what each may publish and subscribe to (`a4co nats-permissions`,",
        f"# deployment prefix {topology.prefix or '(none)'}).",
        *how,
        "authorization {",
        "  users = [",
    ]
    for p in permissions:
        if nkeys is not None:
            who = [f'      nkey: "{nkeys[p.user]}"  # {p.user}']
        elif passwords is not None:
            who = [f'      user: "{p.user}"', f'      password: "{passwords[p.user]}"']
        else:
            who = [f'      user: "{p.user}"', f"      password: ${password_variable(p.user)}"]
        out += ["    {", *who, "      permissions: {"]
        for verb, allow, deny in (
            ("publish", p.publish, p.publish_deny),
            ("subscribe", p.subscribe, p.subscribe_deny),
        ):
            deny_part = f", deny: [{_quoted(deny)}]" if deny else ""
            out.append(f"        {verb}: {{ allow: [{_quoted(allow)}]{deny_part} }}")
        out += ["      }", "    }"]
    out += ["  ]", "}", ""]
    return "\n".join(out)


def render_nsc(permissions: Iterable[Permissions], account: str) -> str:
    """`nsc add user` commands making each user in `account` (operator mode, decision 67)."""

    def flag(name: str, subjects: tuple[str, ...]) -> list[str]:
        return [f"  --{name} '{','.join(subjects)}'"] if subjects else []

    out = [
        "#!/bin/sh",
        "# a4co's NATS users, operator mode (`a4co nats-permissions --format nsc`).",
        "# Each user's JWT holds these lists and is sent when it connects: nats-server's",
        f"# configuration needs `max_control_line: {JWT_CONTROL_LINE}` (the default 4 KB is too small).",
        "set -e",
    ]
    for p in permissions:
        lines = [
            f"nsc add user --account '{account}' --name '{p.user}'",
            *flag("allow-pub", p.publish),
            *flag("deny-pub", p.publish_deny),
            *flag("allow-sub", p.subscribe),
            *flag("deny-sub", p.subscribe_deny),
        ]
        out.append(" \\\n".join(lines))
    return "\n".join(out) + "\n"
