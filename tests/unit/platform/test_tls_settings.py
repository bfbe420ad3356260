"""The A4CO_TLS_* variables (decision 58): what each combination means, and the ones refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.platform.grpc.tls import PLAINTEXT, Tls, TlsSettingsError, grpcurl_flags
from services.platform.settings import Settings, SettingsError

SERVERS = {"A4CO_NATS_URL": "nats://x", "A4CO_DATABASE_URL": "postgresql://x", "A4CO_REDIS_URL": "redis://x"}


@pytest.fixture
def pems(tmp_path: Path) -> dict[str, str]:
    """Three PEM files (their contents are not parsed until gRPC uses them)."""
    files = {}
    for name in ("ca", "cert", "key"):
        path = tmp_path / f"{name}.pem"
        path.write_text(f"-----BEGIN {name}-----\n")
        files[name] = str(path)
    return files


def test_unset_is_plaintext_both_ways() -> None:
    tls = Tls.from_env({})
    assert tls == PLAINTEXT
    assert (tls.server_credentials(), tls.channel_credentials()) == (None, None)
    assert Settings.from_env("inventory", SERVERS).tls == PLAINTEXT
    assert grpcurl_flags({}) == "-plaintext"


def test_a_ca_alone_makes_calls_over_tls_and_a_certificate_serves_it(pems: dict[str, str]) -> None:
    caller = Tls.from_env({"A4CO_TLS_CA_FILE": pems["ca"]})
    assert caller.ca == b"-----BEGIN ca-----\n"
    assert caller.channel_credentials() is not None
    assert caller.server_credentials() is None, "a caller alone serves plaintext"
    env = {
        **SERVERS,
        "A4CO_TLS_CERT_FILE": pems["cert"],
        "A4CO_TLS_KEY_FILE": pems["key"],
        "A4CO_TLS_CA_FILE": pems["ca"],
    }
    server = Settings.from_env("inventory", env).tls
    assert (server.cert, server.key, server.mutual) == (
        b"-----BEGIN cert-----\n",
        b"-----BEGIN key-----\n",
        False,
    )
    assert grpcurl_flags(env) == f"-cacert {pems['ca']}"
    mutual = {**env, "A4CO_TLS_CLIENT_AUTH": "true"}
    assert Settings.from_env("inventory", mutual).tls.mutual
    assert grpcurl_flags(mutual) == f"-cacert {pems['ca']} -cert {pems['cert']} -key {pems['key']}"


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"A4CO_TLS_CERT_FILE": "cert"}, "set A4CO_TLS_CERT_FILE and A4CO_TLS_KEY_FILE together"),
        ({"A4CO_TLS_KEY_FILE": "key"}, "set A4CO_TLS_CERT_FILE and A4CO_TLS_KEY_FILE together"),
        ({"A4CO_TLS_CLIENT_AUTH": "1", "A4CO_TLS_CA_FILE": "ca"}, "A4CO_TLS_CLIENT_AUTH=1 needs"),
        ({"A4CO_TLS_CLIENT_AUTH": "maybe"}, "A4CO_TLS_CLIENT_AUTH='maybe': 1 or 0"),
        (
            {"A4CO_TLS_CA_FILE": "/nonexistent/ca.pem"},
            "A4CO_TLS_CA_FILE='/nonexistent/ca.pem': cannot be read",
        ),
    ],
)
def test_an_incomplete_or_unreadable_setting_is_refused_by_name(
    env: dict[str, str], said: str, pems: dict[str, str]
) -> None:
    env = {k: pems.get(v, v) for k, v in env.items()}
    with pytest.raises(TlsSettingsError, match=said.replace("(", r"\(")):
        Tls.from_env(env)
    with pytest.raises(SettingsError, match=f"payments: {said}"):
        Settings.from_env("payments", {**SERVERS, **env})
