"""JetStream API requests asked again while a cluster says "not now" (decision 64), and only then."""

from __future__ import annotations

import nats.errors
import pytest
from nats.js.errors import BadRequestError, ServiceUnavailableError

from services.platform.events import streams
from services.platform.events.streams import NO_PLACEMENT, until_answered
from services.platform.resilience import Backoff


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams, "ASKING_AGAIN", Backoff(first_s=0.001, cap_s=0.002))


class Answers:
    """A request that fails with `errors` in turn, then answers."""

    def __init__(self, *errors: Exception) -> None:
        self.errors, self.asked = list(errors), 0

    async def __call__(self) -> str:
        self.asked += 1
        if self.errors:
            raise self.errors.pop(0)
        return "answered"


async def test_no_answer_in_time_a_503_and_no_placement_are_asked_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    request = Answers(
        nats.errors.TimeoutError(),
        ServiceUnavailableError(
            code=503, err_code=10008, description="JetStream system temporarily unavailable"
        ),
        BadRequestError(code=400, err_code=NO_PLACEMENT, description="no suitable peers for placement"),
    )
    assert await until_answered("stream ORDERS", request) == "answered"
    assert request.asked == 4
    assert caplog.text.count("stream ORDERS: JetStream did not answer") == 3


async def test_any_other_refusal_is_raised_at_once() -> None:
    request = Answers(BadRequestError(code=400, err_code=10058, description="stream name already in use"))
    with pytest.raises(BadRequestError, match="stream name already in use"):
        await until_answered("stream ORDERS", request)
    assert request.asked == 1


async def test_past_the_deadline_the_last_error_is_raised() -> None:
    request = Answers(*[nats.errors.TimeoutError() for _ in range(1000)])
    with pytest.raises(nats.errors.TimeoutError):
        await until_answered("consumer payments_ORDERS", request, deadline_s=0.05)
    assert 1 < request.asked < 1000
