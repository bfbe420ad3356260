"""TLS on the gRPC servers and on the calls between services (decision 58): off unless configured.

- `A4CO_TLS_CERT_FILE` and `A4CO_TLS_KEY_FILE` (PEM): the server serves TLS with this certificate
  chain and key instead of plaintext.
- `A4CO_TLS_CA_FILE` (PEM): the roots a caller verifies a server's certificate against; with it, a
  service's calls to its peers (and the `a4co` command's) go over TLS.
- `A4CO_TLS_CLIENT_AUTH=1`: mutual TLS. The server asks every caller for a certificate and verifies
  it against the CA; a service's calls present its own certificate and key.

The files are read once, at start: a deployment that renews its certificates restarts its services
(one replica at a time). Each is checked then: a certificate, a CA or a key that is not PEM, or a
key that is not the certificate's, stops the service with the variable named; and the served
certificate's expiry is exported (`a4co_tls_certificate_expiry_timestamp_seconds`) for the
`TlsCertificateExpiring` alert.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from prometheus_client import Gauge

CERTIFICATE_EXPIRY = Gauge(
    "a4co_tls_certificate_expiry_timestamp_seconds",
    "When the certificate a service serves gRPC with expires (Unix time), as read at its start:"
    " a renewed certificate counts once the service has restarted.",
    ["service"],
)


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
        return cls(cert=cert, key=key, ca=ca, mutual=mutual)

    @property
    def expires(self) -> float | None:
        """When the served certificate expires (Unix time); None for plaintext."""
        if self.cert is None:
            return None
        return x509.load_pem_x509_certificates(self.cert)[0].not_valid_after_utc.timestamp()

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """What the server listens with: None for plaintext."""
        if self.cert is None or self.key is None:
            return None
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)],
            root_certificates=self.ca if self.mutual else None,
            require_client_auth=self.mutual,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """What a call to another service is made with: None for plaintext."""
        if self.ca is None:
            return None
        if self.mutual:
            return grpc.ssl_channel_credentials(self.ca, private_key=self.key, certificate_chain=self.cert)
        return grpc.ssl_channel_credentials(self.ca)


PLAINTEXT = Tls()


def channel(
    target: str,
    tls: Tls = PLAINTEXT,
    *,
    interceptors: list[grpc.aio.ClientInterceptor] | None = None,
    options: list[tuple[str, int]] | None = None,
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
