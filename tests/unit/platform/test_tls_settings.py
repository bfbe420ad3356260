"""The A4CO_TLS_* variables (decision 58): what each combination means, and the ones refused."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from services.platform.grpc.tls import PLAINTEXT, Certificates, Tls, TlsSettingsError, grpcurl_flags
from services.platform.settings import Settings, SettingsError
from tests.support.certificates import Authority

SERVERS = {"A4CO_NATS_URL": "nats://x", "A4CO_DATABASE_URL": "postgresql://x", "A4CO_REDIS_URL": "redis://x"}


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    return Authority.create(tmp_path, "ca")


@pytest.fixture
def pems(tmp_path: Path, authority: Authority) -> dict[str, str]:
    """A CA's certificate, a certificate it issued and that certificate's key; another
    certificate's key; and a file that is no PEM at all."""
    cert, key = authority.issue(tmp_path, "service")
    _, other_key = authority.issue(tmp_path, "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    return {
        "ca": str(authority.cert_file),
        "cert": str(cert),
        "key": str(key),
        "other_key": str(other_key),
        "garbage": str(garbage),
    }


def test_unset_is_plaintext_both_ways() -> None:
    tls = Tls.from_env({})
    assert tls == PLAINTEXT
    assert (Certificates(tls).server_credentials(), tls.channel_credentials(), tls.expires) == (
        None,
        None,
        None,
    )
    assert Settings.from_env("inventory", SERVERS).tls == PLAINTEXT
    assert grpcurl_flags({}) == "-plaintext"


def test_a_ca_alone_makes_calls_over_tls_and_a_certificate_serves_it(pems: dict[str, str]) -> None:
    caller = Tls.from_env({"A4CO_TLS_CA_FILE": pems["ca"]})
    assert caller.ca == Path(pems["ca"]).read_bytes()
    assert caller.channel_credentials() is not None
    assert Certificates(caller).server_credentials() is None, "a caller alone serves plaintext"
    env = {
        **SERVERS,
        "A4CO_TLS_CERT_FILE": pems["cert"],
        "A4CO_TLS_KEY_FILE": pems["key"],
        "A4CO_TLS_CA_FILE": pems["ca"],
    }
    server = Settings.from_env("inventory", env).tls
    assert (server.cert, server.key, server.mutual) == (
        Path(pems["cert"]).read_bytes(),
        Path(pems["key"]).read_bytes(),
        False,
    )
    assert Certificates(server).server_credentials() is not None
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
        ({"A4CO_TLS_CA_FILE": "garbage"}, "A4CO_TLS_CA_FILE='{garbage}': not a PEM certificate"),
        (
            {"A4CO_TLS_CERT_FILE": "garbage", "A4CO_TLS_KEY_FILE": "key"},
            "A4CO_TLS_CERT_FILE='{garbage}': not a PEM certificate",
        ),
        (
            {"A4CO_TLS_CERT_FILE": "cert", "A4CO_TLS_KEY_FILE": "garbage"},
            "A4CO_TLS_KEY_FILE='{garbage}': not an unencrypted PEM private key",
        ),
        (
            {"A4CO_TLS_CERT_FILE": "cert", "A4CO_TLS_KEY_FILE": "other_key"},
            "A4CO_TLS_KEY_FILE='{other_key}': not the key of A4CO_TLS_CERT_FILE's certificate",
        ),
    ],
)
def test_an_incomplete_unreadable_or_mismatched_setting_is_refused_by_name(
    env: dict[str, str], said: str, pems: dict[str, str]
) -> None:
    env = {k: pems.get(v, v) for k, v in env.items()}
    said = re.escape(said.format(**pems))
    with pytest.raises(TlsSettingsError, match=said):
        Tls.from_env(env)
    with pytest.raises(SettingsError, match=f"payments: {said}"):
        Settings.from_env("payments", {**SERVERS, **env})


def test_the_served_certificates_expiry_is_read_from_it(tmp_path: Path, authority: Authority) -> None:
    cert, key = authority.issue(tmp_path, "short-lived", days=0.5)  # the CA's lasts a day
    server = Tls.from_env({"A4CO_TLS_CERT_FILE": str(cert), "A4CO_TLS_KEY_FILE": str(key)})
    assert server.expires is not None
    left = server.expires - time.time()
    assert 0.5 * 86_400 - 60 < left <= 0.5 * 86_400
