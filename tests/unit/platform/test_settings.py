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


def test_streams_and_keepalive_default_and_follow_the_environment() -> None:
    default = Settings.from_env("notifications", SERVERS)
    assert (default.max_streams, default.grpc_keepalive_s) == (1000, 60.0)
    env = {**SERVERS, "A4CO_MAX_STREAMS": "5", "A4CO_GRPC_KEEPALIVE_S": "2.5"}
    changed = Settings.from_env("notifications", env)
    assert (changed.max_streams, changed.grpc_keepalive_s) == (5, 2.5)


@pytest.mark.parametrize("variable", ["A4CO_GRPC_KEEPALIVE_S", "A4CO_TLS_CHECK_S"])
@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan", "inf"])
def test_a_time_that_is_not_positive_is_refused(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=rf"{variable}=.*a positive number of seconds"):
        Settings.from_env("notifications", {**SERVERS, variable: value})


def test_the_tls_files_are_looked_at_every_ten_seconds_unless_told() -> None:
    assert Settings.from_env("payments", SERVERS).tls_check_s == 10.0
    assert Settings.from_env("payments", {**SERVERS, "A4CO_TLS_CHECK_S": "300"}).tls_check_s == 300.0


def test_a_stream_limit_below_one_is_refused() -> None:
    with pytest.raises(SettingsError, match=r"A4CO_MAX_STREAMS=.*a whole number of at least 1"):
        Settings.from_env("notifications", {**SERVERS, "A4CO_MAX_STREAMS": "0"})


def test_missing_server_urls_are_named() -> None:
    with pytest.raises(SettingsError, match="orders: set A4CO_NATS_URL, A4CO_REDIS_URL"):
        Settings.from_env("orders", {"A4CO_DATABASE_URL": SERVERS["A4CO_DATABASE_URL"]})
