"""What a Redis subscription's loop says (SubscriptionLog): once when the subscription is lost, again
every REPEAT_S while the attempts to subscribe again fail, once when it is back, with how long it
was lost and how many attempts failed."""

from __future__ import annotations

import logging

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from services.platform.events.connection import REPEAT_S
from services.platform.pubsub import SubscriptionLog
from tests.support.clock import Clock
from tests.support.logs import said as logged

REFUSED = RedisConnectionError("Error 111 connecting to 10.0.0.5:6379. Connection refused.")


def said(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return logged(caplog, "services.platform.pubsub")


@pytest.fixture(autouse=True)
def _everything_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="services.platform.pubsub")


def test_a_lost_subscription_is_said_once_then_every_repeat_and_back_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    log = SubscriptionLog("a4co:sessions:revoked", "reading from the store", clock)
    log.subscribed()  # the first subscription: nothing to say
    assert said(caplog) == []

    log.lost(RedisConnectionError("the subscription's connection was lost (the read returned nothing)"))
    for _ in range(5):  # attempts 5 s apart, as the loops' backoff at its cap
        clock.now += 5.0
        log.lost(REFUSED)
    assert said(caplog) == [
        (
            logging.WARNING,
            "lost a4co:sessions:revoked (the subscription's connection was lost (the read returned"
            " nothing)); reading from the store until subscribed again",
        )
    ]
    assert [r.levelno for r in caplog.records].count(logging.DEBUG) == 5

    clock.now += REPEAT_S - 25.0  # REPEAT_S after it was lost
    log.lost(REFUSED)
    clock.now += 5.0
    log.lost(REFUSED)
    assert said(caplog)[1:] == [
        (
            logging.WARNING,
            f"a4co:sessions:revoked still lost after {REPEAT_S:.0f} s (6 attempts), the last: {REFUSED}",
        )
    ]

    clock.now += 1.5
    log.subscribed()
    log.subscribed()  # redis-py renewing it later is not a loss
    assert said(caplog)[2:] == [
        (
            logging.INFO,
            f"subscribed again to a4co:sessions:revoked after {REPEAT_S + 6.5:.1f} s lost"
            " (7 attempts failed)",
        )
    ]


def test_each_loss_is_said_anew(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    log = SubscriptionLog("the live notifications' subscription", "streams end and are refused", clock)
    for _ in range(2):
        log.lost(REFUSED)
        clock.now += 0.2
        log.subscribed()
    assert [level for level, _ in said(caplog)] == [logging.WARNING, logging.INFO] * 2
    assert said(caplog)[3][1].endswith("after 0.2 s lost (0 attempts failed)")
