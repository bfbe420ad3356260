"""TLS on the gRPC servers and on the calls between services (decision 58): off unless configured.

- `A4CO_TLS_CERT_FILE` and `A4CO_TLS_KEY_FILE` (PEM): the server serves TLS with this certificate
  chain and key instead of plaintext.
- `A4CO_TLS_CA_FILE` (PEM): the roots a caller verifies a server's certificate against; with it, a
  service's calls to its peers (and the `a4co` command's) go over TLS.
- `A4CO_TLS_CLIENT_AUTH=1`: mutual TLS. The server asks every caller for a certificate and verifies
  it against the CA; a service's calls present its own certificate and key.

The files are checked when read: a certificate, a CA or a key that is not PEM, or a key that is
not the certificate's, stops the service at start with the variable named.

A renewed certificate is used without a restart (decision 59, `Certificates`): every
`A4CO_TLS_CHECK_S` seconds (10 by default), and at once on SIGHUP, a service looks at the files;
when they have changed and are whole (the key the certificate's), the next connections to its
server get the new certificate and its calls to peers go over new connections made with the new
files. Files caught half-written are not used (`a4co_tls_reloads_total{outcome="rejected"}`, a
warning), and are looked at again when they change. The served certificate's expiry, as last read, is exported
(`a4co_tls_certificate_expiry_timestamp_seconds`) for the `TlsCertificateExpiring` alert.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from prometheus_client import Counter, Gauge

log = logging.getLogger(__name__)

CERTIFICATE_EXPIRY = Gauge(
    "a4co_tls_certificate_expiry_timestamp_seconds",
    "When the certificate a service serves gRPC with expires (Unix time), as last read from its"
    " file: a renewed certificate counts once the service has read it (within a minute).",
    ["service"],
)
RELOADS = Counter(
    "a4co_tls_reloads_total",
    "Changes of the TLS files a service has read: loaded, or rejected (not PEM, or the key not the"
    " certificate's: caught half-written) and the files read before kept.",
    ["service", "outcome"],
)
# How often a service looks at its TLS files' modification times by default (A4CO_TLS_CHECK_S;
# SIGHUP: at once).
CHECK_EVERY_S = 10.0
# A served certificate closer than this to its expiry is logged when read (and alerted on:
# TlsCertificateExpiring, deploy/prometheus/alerts.yml).
CERTIFICATE_WARNING_DAYS = 14


class TlsSettingsError(ValueError):
    """An `A4CO_TLS_*` variable is wrong (Settings reports it as a SettingsError)."""


YES, NO = frozenset({"1", "true", "yes"}), frozenset({"", "0", "false", "no"})


def _read(env: Mapping[str, str], name: str) -> bytes | None:
    path = env.get(name, "")
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TlsSettingsError(f"{name}={path!r}: cannot be read ({exc.strerror})") from None


def _certificates(name: str, path: str, pem: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise TlsSettingsError(f"{name}={path!r}: not a PEM certificate") from None


def _check(env: Mapping[str, str], cert: bytes | None, key: bytes | None, ca: bytes | None) -> None:
    """The files are what they claim to be, and the key is the certificate's."""
    if ca is not None:
        _certificates("A4CO_TLS_CA_FILE", env["A4CO_TLS_CA_FILE"], ca)
    if cert is None or key is None:
        return
    leaf = _certificates("A4CO_TLS_CERT_FILE", env["A4CO_TLS_CERT_FILE"], cert)[0]
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        raise TlsSettingsError(
            f"A4CO_TLS_KEY_FILE={env['A4CO_TLS_KEY_FILE']!r}: not an unencrypted PEM private key"
        ) from None
    if private.public_key() != leaf.public_key():
        raise TlsSettingsError(
            f"A4CO_TLS_KEY_FILE={env['A4CO_TLS_KEY_FILE']!r}: not the key of A4CO_TLS_CERT_FILE's certificate"
        )


@dataclass(frozen=True, slots=True)
class Tls:
    """The PEM files a process serves and calls with; every one empty: plaintext."""

    cert: bytes | None = None
    key: bytes | None = None
    ca: bytes | None = None
    mutual: bool = False
    # Where they were read from (certificate, key, CA), to read them again when they change.
    files: tuple[str, str, str] = ("", "", "")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Tls:
        """Read the `A4CO_TLS_*` variables; TlsSettingsError names the one that is wrong."""
        raw = env.get("A4CO_TLS_CLIENT_AUTH", "").lower()
        if raw not in YES | NO:
            raise TlsSettingsError(f"A4CO_TLS_CLIENT_AUTH={raw!r}: 1 or 0")
        mutual = raw in YES
        has_cert, has_key = bool(env.get("A4CO_TLS_CERT_FILE")), bool(env.get("A4CO_TLS_KEY_FILE"))
        if has_cert != has_key:
            raise TlsSettingsError("set A4CO_TLS_CERT_FILE and A4CO_TLS_KEY_FILE together")
        if mutual and not (has_cert and env.get("A4CO_TLS_CA_FILE")):
            raise TlsSettingsError(
                "A4CO_TLS_CLIENT_AUTH=1 needs A4CO_TLS_CA_FILE, A4CO_TLS_CERT_FILE and A4CO_TLS_KEY_FILE"
            )
        cert, key = _read(env, "A4CO_TLS_CERT_FILE"), _read(env, "A4CO_TLS_KEY_FILE")
        ca = _read(env, "A4CO_TLS_CA_FILE")
        _check(env, cert, key, ca)
        files = (
            env.get("A4CO_TLS_CERT_FILE", ""),
            env.get("A4CO_TLS_KEY_FILE", ""),
            env.get("A4CO_TLS_CA_FILE", ""),
        )
        return cls(cert=cert, key=key, ca=ca, mutual=mutual, files=files)

    def read_again(self) -> Tls:
        """The same files read now; TlsSettingsError when they are not whole."""
        cert, key, ca = self.files
        return Tls.from_env(
            {
                "A4CO_TLS_CERT_FILE": cert,
                "A4CO_TLS_KEY_FILE": key,
                "A4CO_TLS_CA_FILE": ca,
                "A4CO_TLS_CLIENT_AUTH": "1" if self.mutual else "0",
            }
        )

    def stamp(self) -> tuple[tuple[int, int, int] | None, ...]:
        """The files' identity, size and modification time (None for one missing): what changes
        when they are renewed, whether written in place or swapped (a Kubernetes secret's link)."""
        stamps: list[tuple[int, int, int] | None] = []
        for path in self.files:
            if not path:
                continue
            try:
                st = os.stat(path)
            except OSError:
                stamps.append(None)
            else:
                stamps.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(stamps)

    @property
    def expires(self) -> float | None:
        """When the served certificate expires (Unix time); None for plaintext."""
        if self.cert is None:
            return None
        return x509.load_pem_x509_certificates(self.cert)[0].not_valid_after_utc.timestamp()

    def certificate_configuration(self) -> grpc.ServerCertificateConfiguration:
        """The served certificate and key, and for mutual TLS the CA callers are verified against."""
        if self.cert is None or self.key is None:
            raise TlsSettingsError("a server's TLS needs A4CO_TLS_CERT_FILE and A4CO_TLS_KEY_FILE")
        return grpc.ssl_server_certificate_configuration(
            [(self.key, self.cert)], root_certificates=self.ca if self.mutual else None
        )

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """What a call to another service is made with: None for plaintext."""
        if self.ca is None:
            return None
        if self.mutual:
            return grpc.ssl_channel_credentials(self.ca, private_key=self.key, certificate_chain=self.cert)
        return grpc.ssl_channel_credentials(self.ca)


PLAINTEXT = Tls()


class Certificates:
    """A process's TLS files as last read (decision 59): `generation` counts the changes loaded.

    The server's credentials hand gRPC the newest certificate before each new connection's
    handshake; a `PeerClient` made with `PeerClient.to` opens a new channel when `generation` has
    moved, so its next connections present the new certificate and trust the new CA.
    """

    def __init__(self, tls: Tls = PLAINTEXT, service: str = "") -> None:
        self.tls, self.service = tls, service
        self.generation = 0
        self._stamp = tls.stamp()
        self._listeners: list[Callable[[Tls], None]] = []
        self._announce()

    def follow(self, listener: Callable[[Tls], None]) -> None:
        """Call `listener` with each new set of files loaded (the metrics endpoint's, say)."""
        self._listeners.append(listener)

    @property
    def watched(self) -> bool:
        """Whether there are files to follow (not plaintext)."""
        return any(self.tls.files)

    def check(self) -> bool:
        """Read the files again if they have changed since last looked at; True when a new set
        was loaded. Files that are not whole are rejected, logged, and the ones before kept."""
        stamp = self.tls.stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            tls = self.tls.read_again()
        except TlsSettingsError as exc:
            RELOADS.labels(self.service, "rejected").inc()
            log.warning("the TLS files changed but cannot be used (%s); keeping the ones read before", exc)
            return False
        if tls == self.tls:
            return False  # touched, not changed
        self.tls = tls
        self.generation += 1
        RELOADS.labels(self.service, "loaded").inc()
        log.info("TLS files read again (change %d): new connections use them", self.generation)
        self._announce()
        for listener in self._listeners:
            try:
                listener(tls)
            except (OSError, ValueError) as exc:  # changed again meanwhile: the next look retries
                log.warning("TLS files read again, but not by %r: %s", listener, exc)
        return True

    def _announce(self) -> None:
        expires = self.tls.expires
        if expires is None:
            return
        CERTIFICATE_EXPIRY.labels(self.service).set(expires)
        days = (expires - time.time()) / 86_400
        if days < CERTIFICATE_WARNING_DAYS:
            log.warning("the TLS certificate this service serves with expires in %.1f days", days)

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """What the server listens with, following the files: None for plaintext."""
        if self.tls.cert is None:
            return None
        served = self.generation

        def newest() -> grpc.ServerCertificateConfiguration | None:
            # gRPC calls this before each new connection's handshake: None keeps what it has.
            nonlocal served
            if served == self.generation:
                return None
            served = self.generation
            return self.tls.certificate_configuration()

        # grpc's stubs type the fetcher without None, which its documentation allows ("no change").
        return grpc.dynamic_ssl_server_credentials(
            self.tls.certificate_configuration(),
            newest,  # type: ignore[arg-type]
            require_client_authentication=self.tls.mutual,
        )

    async def watch(self, every_s: float = CHECK_EVERY_S) -> None:
        """Look at the files every `every_s` seconds until cancelled."""
        while True:
            await asyncio.sleep(every_s)
            try:
                self.check()
            except Exception:  # a check that fails is tried again at the next look
                log.exception("looking at the TLS files failed")


def client_ssl_context(tls: Tls) -> ssl.SSLContext | None:
    """What a caller of an HTTPS metrics endpoint verifies it with (and, for mutual TLS, presents):
    None for plaintext."""
    if tls.ca is None:
        return None
    context = ssl.create_default_context(cadata=tls.ca.decode())
    cert, key, _ = tls.files
    if tls.mutual and cert and key:
        context.load_cert_chain(cert, key)
    return context


def nats_ssl_context(tls: Tls) -> ssl.SSLContext | None:
    """What a connection to NATS verifies the server with and presents when the server asks for a
    certificate (decision 62): the system's CAs and `A4CO_TLS_CA_FILE`'s, and the process's
    certificate and key. Used when the URL is `tls://` or the server requires TLS; None without
    TLS files, nats-py's own default (the system's CAs)."""
    if not any(tls.files):
        return None
    context = ssl.create_default_context()
    if tls.ca is not None:
        context.load_verify_locations(cadata=tls.ca.decode())
    cert, key, _ = tls.files
    if cert and key:
        context.load_cert_chain(cert, key)
    return context


def channel(
    target: str,
    tls: Tls = PLAINTEXT,
    *,
    interceptors: list[grpc.aio.ClientInterceptor] | None = None,
    options: list[tuple[str, int | str]] | None = None,
) -> grpc.aio.Channel:
    """A channel to `target`: over TLS when `tls` has a CA, else plaintext."""
    credentials = tls.channel_credentials()
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)


def grpcurl_flags(env: Mapping[str, str]) -> str:
    """grpcurl's flags for the servers these variables configure: `-plaintext`, or the CA (and,
    for mutual TLS, the client's certificate and key)."""
    if not env.get("A4CO_TLS_CERT_FILE"):
        return "-plaintext"
    ca = env.get("A4CO_TLS_CA_FILE")
    flags = f"-cacert {ca}" if ca else "-insecure"
    if env.get("A4CO_TLS_CLIENT_AUTH", "").lower() in YES:
        flags += f" -cert {env['A4CO_TLS_CERT_FILE']} -key {env['A4CO_TLS_KEY_FILE']}"
    return flags
