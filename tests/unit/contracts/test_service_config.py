"""`proto/service-config.json`, the gRPC service config other teams' clients load: every method is
named once, with retries only where a call repeated changes nothing more than the first (a read,
a request_id, or a contract that says twice is harmless), and no deadline: that is the caller's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.unit.contracts.test_rpc_contracts import all_services

CONFIG = Path(__file__).resolve().parents[3] / "proto" / "service-config.json"
READS = ("Get", "List", "Search", "Check", "Find", "Quote", "Watch")
# Writes whose contract (the .proto comment quoted) makes a second call harmless.
HARMLESS_TWICE = {
    "a4co.orders.v1.OrdersService/CancelOrder": "Cancelling twice is harmless",
    "a4co.identity.v1.IdentityService/EndSession": "ended already is answered as if it had just ended",
    "a4co.notifications.v1.NotificationsService/MarkNotificationsRead": "keeps its first read_time",
}
# Never retried by a client on its own, whatever the answer.
NEVER = {
    "a4co.identity.v1.IdentityService/RefreshToken": "reusing a refresh token ends the whole session",
    "a4co.identity.v1.IdentityService/Login": "each try counts against the address's five in 15 minutes",
    "a4co.identity.v1.IdentityService/RequestPasswordReset": "each try mails a code, three an hour",
    "a4co.payments.v1.PaymentsService/ValidatePaymentMethod": "each call stores a new method",
}


def method_configs() -> list[dict[str, Any]]:
    configs: list[dict[str, Any]] = json.loads(CONFIG.read_text())["methodConfig"]
    return configs


def configured() -> dict[str, dict[str, Any]]:
    """Each method's config, by "service/method"; a method named twice fails."""
    by_method: dict[str, dict[str, Any]] = {}
    for config in method_configs():
        for name in config["name"]:
            key = f"{name['service']}/{name['method']}"
            assert key not in by_method, f"{key} is named twice"
            by_method[key] = config
    return by_method


def contract(key: str) -> str:
    """The comment above a method's rpc line in its .proto, as one line."""
    name = key.split("/")[1]
    proto = CONFIG.parent / methods()[key].containing_service.file.name
    lines = proto.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith(f"rpc {name}("))
    above: list[str] = []
    for line in reversed(lines[:at]):
        if not line.strip().startswith("//"):
            break
        above.insert(0, line.strip().removeprefix("//").strip())
    return " ".join(above)


def methods() -> dict[str, Any]:
    return {f"{s.full_name}/{m.name}": m for s in all_services() for m in s.methods}


def test_every_method_is_named_once_and_nothing_else() -> None:
    assert set(configured()) == set(methods())


def test_retries_only_where_a_second_call_changes_nothing_more() -> None:
    retried = {key for key, config in configured().items() if "retryPolicy" in config}
    expected = {
        key
        for key, method in methods().items()
        if method.name.startswith(READS)
        or method.name == "ValidateToken"
        or "request_id" in method.input_type.fields_by_name
        or key in HARMLESS_TWICE
    }
    assert retried == expected
    assert not retried & set(NEVER)
    for key, said in HARMLESS_TWICE.items():
        assert said in contract(key), f"{key}: its contract no longer says {said!r}"


def test_only_unavailable_is_retried_as_the_strategy_backs_off() -> None:
    for config in method_configs():
        if "retryPolicy" in config:
            assert config["retryPolicy"] == {
                "maxAttempts": 3,
                "initialBackoff": "1s",
                "maxBackoff": "30s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            }
    assert json.loads(CONFIG.read_text())["retryThrottling"] == {"maxTokens": 10, "tokenRatio": 0.1}


def test_no_deadline_is_set_for_the_caller() -> None:
    """grpcio applies a service config's timeout up to a second early (grpc/grpc#34547), and only
    the caller knows how long its user waits: the README gives each kind of call's figure."""
    for config in method_configs():
        assert set(config) <= {"name", "retryPolicy"}, config
