"""Settings of a service, read from the environment by its composition root only."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.platform.events.connection import servers
from services.platform.events.credentials import NO_CREDENTIALS, NatsCredentials, redact
from services.platform.grpc.tls import CHECK_EVERY_S, PLAINTEXT, Tls, TlsSettingsError

# A deployment's prefix (A4CO_PREFIX): it starts stream, subject, consumer, inbox and schema names.
PREFIX = re.compile(r"[a-z][a-z0-9]{0,30}")


def prefix_error(prefix: str) -> str | None:
    """Why `prefix` cannot be a deployment's prefix; None when it can ("" is no prefix)."""
    if prefix and not PREFIX.fullmatch(prefix):
        return f"A4CO_PREFIX={prefix!r}: a lower-case letter, then up to 30 lower-case letters and digits"
    return None


class SettingsError(ValueError):
    """A setting is missing or malformed."""


def _at_least_one(env: Mapping[str, str], name: str, default: int) -> int:
    """A whole number of at least 1 from `env`, or `default` when unset."""
    raw = env.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise SettingsError(f"{name}={raw!r}: a whole number of at least 1")
    return value


# The most copies JetStream keeps of a stream (on as many servers of the cluster).
MAX_REPLICAS = 5


def _replicas(env: Mapping[str, str]) -> int:
    """`A4CO_STREAM_REPLICAS`: how many servers of the NATS cluster keep each stream, 1 to 5."""
    raw = env.get("A4CO_STREAM_REPLICAS", "1")
    value = int(raw) if raw.strip().isdigit() else 0
    if not 1 <= value <= MAX_REPLICAS:
        raise SettingsError(
            f"A4CO_STREAM_REPLICAS={raw!r}: a whole number from 1 to {MAX_REPLICAS}, and at most the"
            " number of servers in the NATS cluster (3 for a cluster of three)"
        )
    return value


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    """A positive number of seconds from `env`, or `default` when unset."""
    raw = env.get(name, str(default))
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise SettingsError(f"{name}={raw!r}: a positive number of seconds")
    return value


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """How the event streams are created: storage limits, deduplication and replication."""

    replicas: int = 1
    max_age_s: float = 7 * 24 * 3600
    max_bytes: int = -1
    duplicate_window_s: float = 120.0


@dataclass(frozen=True, slots=True)
class Settings:
    """Where a service finds its servers and how it names what it creates there.

    `prefix` isolates one deployment (or one test) from another on shared servers: it prefixes
    stream names, subjects, consumer names and database schemas.
    """

    service: str
    nats_url: str
    database_url: str
    redis_url: str
    prefix: str = ""
    streams: StreamSettings = StreamSettings()
    jwt_public_key_file: str = ""
    jwt_private_key_file: str = ""
    peers: Mapping[str, str] = field(default_factory=dict)
    # Calls served at once; more are refused with RESOURCE_EXHAUSTED (shed, not queued).
    max_concurrent_rpcs: int = 256
    # Server-streaming calls open at once; more are refused with RESOURCE_EXHAUSTED.
    max_streams: int = 1000
    # Calls of each method the gRPC server takes from its queue at once (decision 24).
    grpc_acceptors: int = 4
    # How often the gRPC server pings a client's connection; one that does not answer within
    # KEEPALIVE_TIMEOUT_S is closed, and the calls and streams on it end.
    grpc_keepalive_s: float = 60.0
    # How long the gRPC server keeps a client connection before asking it to make a new one
    # (GOAWAY; gRPC adds ±10 % jitter): the calls after that go on a connection the client makes
    # anew, to whichever replicas its name resolves to then, so that a replica started since
    # gets its share. Streams open on the old connection run on to their end.
    grpc_max_connection_age_s: float = 300.0
    # TLS on the gRPC server and on the calls to peers (A4CO_TLS_*, decision 58); plaintext if unset.
    tls: Tls = PLAINTEXT
    # How often the TLS files are looked at for a renewal (A4CO_TLS_CHECK_S; SIGHUP: at once).
    tls_check_s: float = CHECK_EVERY_S
    # Who the service is to NATS (A4CO_NATS_CREDS_FILE or A4CO_NATS_NKEY_FILE, decision 67).
    nats_credentials: NatsCredentials = NO_CREDENTIALS

    @classmethod
    def from_env(cls, service: str, env: Mapping[str, str] | None = None) -> Settings:
        """Read `A4CO_*` variables; the three server URLs are required."""
        env = os.environ if env is None else env
        missing = [k for k in ("A4CO_NATS_URL", "A4CO_DATABASE_URL", "A4CO_REDIS_URL") if not env.get(k)]
        if missing:
            raise SettingsError(f"{service}: set {', '.join(missing)}")
        try:
            servers(env["A4CO_NATS_URL"])
        except ValueError as exc:
            raise SettingsError(f"A4CO_NATS_URL={redact(env['A4CO_NATS_URL'])!r}: {exc}") from None
        try:
            nats_credentials = NatsCredentials.from_env(env)
        except ValueError as exc:
            raise SettingsError(f"{service}: {exc}") from None
        prefix = env.get("A4CO_PREFIX", "")
        if problem := prefix_error(prefix):
            raise SettingsError(problem)
        try:
            tls = Tls.from_env(env)
        except TlsSettingsError as exc:
            raise SettingsError(f"{service}: {exc}") from None
        return cls(
            service=service,
            nats_url=env["A4CO_NATS_URL"],
            database_url=env["A4CO_DATABASE_URL"],
            redis_url=env["A4CO_REDIS_URL"],
            prefix=prefix,
            streams=StreamSettings(
                replicas=_replicas(env),
                max_age_s=float(env.get("A4CO_STREAM_MAX_AGE_S", str(7 * 24 * 3600))),
                max_bytes=int(env.get("A4CO_STREAM_MAX_BYTES", "-1")),
                duplicate_window_s=float(env.get("A4CO_STREAM_DUPLICATE_WINDOW_S", "120")),
            ),
            jwt_public_key_file=env.get("A4CO_JWT_PUBLIC_KEY_FILE", ""),
            jwt_private_key_file=env.get("A4CO_JWT_PRIVATE_KEY_FILE", ""),
            peers={
                key[len("A4CO_PEER_") :].lower(): value
                for key, value in env.items()
                if key.startswith("A4CO_PEER_") and value
            },
            max_concurrent_rpcs=int(env.get("A4CO_MAX_CONCURRENT_RPCS", "256")),
            max_streams=_at_least_one(env, "A4CO_MAX_STREAMS", 1000),
            grpc_acceptors=_at_least_one(env, "A4CO_GRPC_ACCEPTORS", 4),
            grpc_keepalive_s=_seconds(env, "A4CO_GRPC_KEEPALIVE_S", 60.0),
            grpc_max_connection_age_s=_seconds(env, "A4CO_GRPC_MAX_CONNECTION_AGE_S", 300.0),
            tls=tls,
            tls_check_s=_seconds(env, "A4CO_TLS_CHECK_S", CHECK_EVERY_S),
            nats_credentials=nats_credentials,
        )

    def public_key(self) -> str:
        """The PEM of identity's token verification key."""
        if not self.jwt_public_key_file:
            raise SettingsError(f"{self.service}: set A4CO_JWT_PUBLIC_KEY_FILE")
        return Path(self.jwt_public_key_file).read_text()

    def private_key(self) -> str:
        """The PEM of identity's token signing key."""
        if not self.jwt_private_key_file:
            raise SettingsError(f"{self.service}: set A4CO_JWT_PRIVATE_KEY_FILE")
        return Path(self.jwt_private_key_file).read_text()

    def peer(self, name: str) -> str:
        """The gRPC address of a peer service (`A4CO_PEER_<NAME>=host:port`)."""
        try:
            return self.peers[name]
        except KeyError:
            raise SettingsError(f"{self.service}: set A4CO_PEER_{name.upper()}") from None
