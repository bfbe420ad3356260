"""Settings read from the environment: defaults, and clear errors for bad values."""

from __future__ import annotations

import re

import pytest

from services.platform.events.connection import servers
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


def test_streams_keepalive_and_connection_age_default_and_follow_the_environment() -> None:
    default = Settings.from_env("notifications", SERVERS)
    age = default.grpc_max_connection_age_s
    assert (default.max_streams, default.grpc_keepalive_s, age) == (1000, 60.0, 300.0)
    env = {
        **SERVERS,
        "A4CO_MAX_STREAMS": "5",
        "A4CO_GRPC_KEEPALIVE_S": "2.5",
        "A4CO_GRPC_MAX_CONNECTION_AGE_S": "30",
    }
    changed = Settings.from_env("notifications", env)
    age = changed.grpc_max_connection_age_s
    assert (changed.max_streams, changed.grpc_keepalive_s, age) == (5, 2.5, 30.0)


@pytest.mark.parametrize(
    "variable", ["A4CO_GRPC_KEEPALIVE_S", "A4CO_GRPC_MAX_CONNECTION_AGE_S", "A4CO_TLS_CHECK_S"]
)
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


def test_a_nats_url_may_name_every_server_of_a_cluster() -> None:
    cluster = "nats://n1:4222, nats://n2:4222,n3:4223"
    assert servers(cluster) == ["nats://n1:4222", "nats://n2:4222", "n3:4223"]
    assert Settings.from_env("orders", {**SERVERS, "A4CO_NATS_URL": cluster}).nats_url == cluster
    assert servers("tls://nats.a4co.es") == ["tls://nats.a4co.es"]


@pytest.mark.parametrize(
    ("url", "said"),
    [
        (" , ", "no NATS server in it"),
        ("nats://n1:4222,nats://:4222", "'nats://:4222' names no host"),
        ("nats://n1:port", "'nats://n1:port' has a port that is not a number"),
        ("http://n1:4222", "'http://n1:4222': the scheme must be one of nats, tls, ws, wss"),
        ("nats://n1:4222,ws://n2:8080", "WebSocket servers .* cannot be mixed"),
    ],
)
def test_a_nats_url_that_names_no_server_nats_could_reach_is_refused(url: str, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        servers(url)
    with pytest.raises(SettingsError, match=rf"A4CO_NATS_URL='{re.escape(url)}': {said}"):
        Settings.from_env("orders", {**SERVERS, "A4CO_NATS_URL": url})


def test_streams_are_kept_on_one_server_unless_told_how_many() -> None:
    assert Settings.from_env("orders", SERVERS).streams.replicas == 1
    assert Settings.from_env("orders", {**SERVERS, "A4CO_STREAM_REPLICAS": "3"}).streams.replicas == 3


@pytest.mark.parametrize("value", ["0", "6", "-1", "three", "2.5"])
def test_a_replica_count_jetstream_cannot_keep_is_refused(value: str) -> None:
    with pytest.raises(SettingsError, match=r"A4CO_STREAM_REPLICAS=.*a whole number from 1 to 5"):
        Settings.from_env("orders", {**SERVERS, "A4CO_STREAM_REPLICAS": value})


@pytest.mark.parametrize("prefix", ["Staging", "a.b", "a_b", "1st", "staging\n", "x" * 32])
def test_a_prefix_that_would_not_name_streams_and_schemas_alike_is_refused(prefix: str) -> None:
    with pytest.raises(SettingsError, match=r"A4CO_PREFIX=.*a lower-case letter, then up to 30"):
        Settings.from_env("orders", {**SERVERS, "A4CO_PREFIX": prefix})
    assert Settings.from_env("orders", {**SERVERS, "A4CO_PREFIX": "staging2"}).prefix == "staging2"
