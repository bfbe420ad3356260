"""A message's delivery count read from its JetStream acknowledgement subject, as nats-py reads it."""

from __future__ import annotations

import pytest
from nats.aio.msg import Msg
from nats.errors import NotJSMessageError

from services.platform.events.consumer import deliveries


def message(reply: str) -> Msg:
    return Msg(_client=None, subject="a4co.orders.order.created", reply=reply, data=b"")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "reply",
    [
        "$JS.ACK.ORDERS.payments_ORDERS.3.120.118.1732870000000000000.5",  # no domain
        "$JS.ACK._.4f2a.ORDERS.payments_ORDERS.3.120.118.1732870000000000000.5",  # domain, account
        "$JS.ACK.hub.4f2a.ORDERS.payments_ORDERS.3.120.118.1732870000000000000.5.x9Yz",  # and a token
    ],
)
def test_the_delivery_count_is_the_one_nats_py_reads(reply: str) -> None:
    msg = message(reply)
    assert deliveries(msg) == msg.metadata.num_delivered == 3


@pytest.mark.parametrize("reply", ["", "_INBOX.abc.1", "$JS.ACK.too.short"])
def test_a_message_without_a_jetstream_subject_is_refused_as_before(reply: str) -> None:
    with pytest.raises(NotJSMessageError):
        deliveries(message(reply))
