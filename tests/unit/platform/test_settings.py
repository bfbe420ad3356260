"""Settings read from the environment: defaults, and clear errors for bad values."""

from __future__ import annotations

import pytest

from services.platform.settings import Settings, SettingsError

SERVERS = {
    "A4CO_NATS_URL": "nats://127.0.0.1:4222",
    "A4CO_DATABASE_URL": "postgresql://a4co@127.0.0.1/a4co",
    "A4CO_REDIS_URL": "redis://127.0.0.1:6379/0",
}


def test_the_grpc_acceptors_default_to_four_and_follow_the_environment() -> None:
    assert Settings.from_env("orders", SERVERS).grpc_acceptors == 4
    assert Settings.from_env("orders", {**SERVERS, "A4CO_GRPC_ACCEPTORS": "1"}).grpc_acceptors == 1


@pytest.mark.parametrize("value", ["0", "-2", "many"])
def test_a_grpc_acceptor_count_below_one_is_refused(value: str) -> None:
    with pytest.raises(SettingsError, match=r"A4CO_GRPC_ACCEPTORS=.*a whole number of at least 1"):
        Settings.from_env("orders", {**SERVERS, "A4CO_GRPC_ACCEPTORS": value})


def test_missing_server_urls_are_named() -> None:
    with pytest.raises(SettingsError, match="orders: set A4CO_NATS_URL, A4CO_REDIS_URL"):
        Settings.from_env("orders", {"A4CO_DATABASE_URL": SERVERS["A4CO_DATABASE_URL"]})
