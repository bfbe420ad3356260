"""Who a process is to NATS (decision 67): the variables read and checked, what nats-py is given,
what to correct when NATS refuses, and URLs said without their passwords."""

from __future__ import annotations

from pathlib import Path

import nkeys  # type: ignore[import-untyped]
import pytest
from nats.errors import AuthorizationError, Error

from services.platform.events.credentials import NatsCredentials, redact, refused, url_auth
from services.platform.settings import Settings, SettingsError
from tests.support.nats_accounts import Operator, new_key

SERVERS = {
    "A4CO_NATS_URL": "nats://n:4222",
    "A4CO_DATABASE_URL": "postgresql://db",
    "A4CO_REDIS_URL": "redis://r",
}


@pytest.fixture
def creds(tmp_path: Path) -> Path:
    path = tmp_path / "inventory.creds"
    Operator().user_creds(path, "inventory")
    return path


@pytest.fixture
def seed(tmp_path: Path) -> Path:
    path = tmp_path / "inventory.nk"
    path.write_bytes(new_key(nkeys.PREFIX_BYTE_USER).seed + b"\n")
    return path


def test_a_credentials_file_or_a_seed_file_is_what_nats_py_is_given(creds: Path, seed: Path) -> None:
    assert NatsCredentials.from_env({}).options() == {}
    assert NatsCredentials.from_env({"A4CO_NATS_CREDS_FILE": str(creds)}).options() == {
        "user_credentials": str(creds)
    }
    assert NatsCredentials.from_env({"A4CO_NATS_NKEY_FILE": str(seed)}).options() == {"nkeys_seed": str(seed)}
    settings = Settings.from_env("inventory", {**SERVERS, "A4CO_NATS_CREDS_FILE": str(creds)})
    assert settings.nats_credentials == NatsCredentials(creds_file=str(creds))


def test_what_cannot_be_used_is_refused_naming_the_variable(creds: Path, seed: Path, tmp_path: Path) -> None:
    account_seed = tmp_path / "account.nk"
    account_seed.write_bytes(new_key(nkeys.PREFIX_BYTE_ACCOUNT).seed)
    garbage = tmp_path / "garbage"
    garbage.write_text("not a key\n")
    cases = {
        "set A4CO_NATS_CREDS_FILE or A4CO_NATS_NKEY_FILE, not both": {
            "A4CO_NATS_CREDS_FILE": str(creds),
            "A4CO_NATS_NKEY_FILE": str(seed),
        },
        f"A4CO_NATS_CREDS_FILE={tmp_path}/missing.creds: cannot be read (FileNotFoundError": {
            "A4CO_NATS_CREDS_FILE": str(tmp_path / "missing.creds")
        },
        f"A4CO_NATS_CREDS_FILE={seed}: not a NATS credentials file": {"A4CO_NATS_CREDS_FILE": str(seed)},
        f"A4CO_NATS_NKEY_FILE={account_seed}: not the seed of a user's nkey": {
            "A4CO_NATS_NKEY_FILE": str(account_seed)
        },
        f"A4CO_NATS_NKEY_FILE={garbage}: not the seed of a user's nkey": {
            "A4CO_NATS_NKEY_FILE": str(garbage)
        },
        f"A4CO_NATS_NKEY_FILE={creds}: not the seed of a user's nkey": {"A4CO_NATS_NKEY_FILE": str(creds)},
    }
    for message, env in cases.items():
        with pytest.raises(ValueError, match="A4CO_NATS_") as caught:
            NatsCredentials.from_env(env)
        assert str(caught.value).startswith(message), (env, caught.value)
        with pytest.raises(SettingsError) as stopped:
            Settings.from_env("inventory", {**SERVERS, **env})
        assert str(stopped.value) == f"inventory: {caught.value}"


def test_what_to_correct_follows_what_was_presented(creds: Path, seed: Path) -> None:
    url = "nats://n1:4222,nats://n2:4222"
    assert "A4CO_NATS_CREDS_FILE must hold a user" in NatsCredentials(creds_file=str(creds)).hint(url)
    assert "A4CO_NATS_NKEY_FILE must hold the seed" in NatsCredentials(nkey_file=str(seed)).hint(url)
    assert "in A4CO_NATS_URL must be ones" in NatsCredentials().hint("nats://n1:4222,nats://ana:pw@n2:4222")
    assert "in A4CO_NATS_URL must be ones" in NatsCredentials().hint("t0ken@n1:4222")
    assert NatsCredentials().hint(url).startswith("this NATS requires credentials")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://n1:4222", "nats://n1:4222"),
        ("nats://inventory:s3cret@n1:4222", "nats://inventory:***@n1:4222"),
        ("nats://t0ken@n1:4222", "nats://***@n1:4222"),
        ("tls://a:b@n1:4222, nats://n2:4222", "tls://a:***@n1:4222, nats://n2:4222"),
        ("a:p%40ss@n1:4222", "a:***@n1:4222"),
        (" nats://a:p@ss@n1:4222", " nats://a:***@n1:4222"),
        ("n1:4222", "n1:4222"),
        (" , ", " , "),
    ],
)
def test_a_url_is_said_without_its_password_or_token(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_a_refusal_is_told_from_an_outage() -> None:
    assert refused(Error("nats: 'Authorization Violation'"))
    assert refused(Error("nats: 'User Authentication Expired'"))
    assert refused(Error("nats: 'User Authentication Revoked'"))
    assert refused(AuthorizationError())
    assert not refused(ConnectionRefusedError(111, "Connect call failed"))
    assert not refused(Error("nats: 'Permissions Violation for Publish to \"x\"'"))


@pytest.mark.parametrize(
    ("url", "options"),
    [
        (
            "nats://orders:s3cret@n1:4222,nats://orders:s3cret@n2:4222",
            {"user": "orders", "password": "s3cret"},
        ),
        ("nats://n1:4222,nats://orders:s3cret@n2:4222", {"user": "orders", "password": "s3cret"}),
        ("tls://t0k3n@n1:4222", {"token": "t0k3n"}),
        ("nats://n1:4222,n2:4222", {}),
    ],
)
def test_the_urls_user_goes_to_every_server_the_cluster_announces(url: str, options: dict[str, str]) -> None:
    """nats-py sends a URL's user only to that server; as options, to the announced ones too."""
    assert url_auth(url) == options
