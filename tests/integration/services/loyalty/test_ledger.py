"""loyalty's ledger on real servers: a batch's entries are written together, in their events'
order, once per cause; a refund takes back what its purchase earned."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest_asyncio

from a4co.loyalty.v1 import loyalty_service_pb2 as pb
from a4co.loyalty.v1 import loyalty_service_pb2_grpc as pb_grpc
from a4co.payments.events.v1 import payment_events_pb2 as payments
from a4co.type.v1 import money_pb2
from services.loyalty.__main__ import build
from services.platform.auth import Role
from services.platform.grpc.status import details_of
from services.platform.local_servers import ServerUrls
from services.platform.paging import OTHER_FILTERS
from tests.integration.services.harness import (
    Keys,
    RunningService,
    publish_event,
    running_service,
    settings_for,
    token,
)
from tests.support.rpc import failure
from tests.support.waiting import eventually

SCHEMA = Path("services/loyalty/schema.sql")


@pytest_asyncio.fixture
async def loyalty(urls: ServerUrls, prefix: str, keys: Keys) -> AsyncIterator[RunningService]:
    async with running_service("loyalty", build, SCHEMA, settings_for("loyalty", urls, prefix, keys)) as svc:
        yield svc


def paid(order_id: str, cents: int) -> payments.PaymentProcessed:
    amount = money_pb2.Money(currency_code="EUR", amount_cents=cents)
    return payments.PaymentProcessed(
        payment_id=f"pay-{order_id}", order_id=order_id, customer_id="c-1", amount=amount
    )


def refunded(order_id: str, cents: int) -> payments.RefundIssued:
    amount = money_pb2.Money(currency_code="EUR", amount_cents=cents)
    return payments.RefundIssued(
        refund_id=f"ref-{order_id}",
        payment_id=f"pay-{order_id}",
        order_id=order_id,
        customer_id="c-1",
        amount=amount,
    )


async def entries(loyalty: RunningService) -> dict[str, int]:
    rows = await loyalty.infra.pool.fetch("SELECT entry_key, points FROM entries")
    return {r["entry_key"]: int(r["points"]) for r in rows}


async def test_a_batch_writes_its_entries_in_order_once_per_cause(loyalty: RunningService) -> None:
    consumer = loyalty.consumer("PAYMENTS")
    # o-1's purchase is stored in a batch of its own before the rest.
    await publish_event(loyalty, paid("o-1", 4_000), "o-1")
    await eventually(lambda: consumer.stats.handled == 1, what="o-1 paid")
    await consumer.stop()
    await publish_event(loyalty, paid("o-2", 2_550), "o-2")
    await publish_event(loyalty, paid("o-2", 2_550), "o-2")  # the same cause again, another event id
    await publish_event(loyalty, refunded("o-2", 1_000), "o-2")  # a partial refund, after its purchase
    await publish_event(loyalty, refunded("o-1", 900), "o-1")  # its purchase stored before
    await publish_event(loyalty, refunded("o-3", 1_999), "o-3")  # its purchase not arrived yet
    await consumer.start()  # all five in its first batch
    await eventually(lambda: consumer.stats.handled == 6, what="the batch handled")
    assert await entries(loyalty) == {
        "purchase:o-1": 40,
        "purchase:o-2": 25,
        # A refund takes back what the purchase earned, from this batch or from before,
        "revocation:o-2": -25,
        "revocation:o-1": -40,
        # or, before the purchase arrives, what the refund is worth.
        "revocation:o-3": -19,
    }


async def test_a_customer_pages_through_their_ledger_newest_first(
    loyalty: RunningService, keys: Keys
) -> None:
    consumer = loyalty.consumer("PAYMENTS")
    # One at a time, so that they are written in this order.
    await publish_event(loyalty, paid("o-1", 4_000), "o-1")
    await eventually(lambda: consumer.stats.handled == 1, what="o-1 paid")
    await publish_event(loyalty, paid("o-2", 2_550), "o-2")
    await eventually(lambda: consumer.stats.handled == 2, what="o-2 paid")
    await publish_event(loyalty, refunded("o-1", 4_000), "o-1")
    await eventually(lambda: consumer.stats.handled == 3, what="the refund handled")
    stub = pb_grpc.LoyaltyServiceStub(loyalty.channel)
    me = token(keys, "c-1", Role.CUSTOMER)
    seen, page_token = [], ""
    while True:
        page = await stub.ListLedgerEntries(
            pb.ListLedgerEntriesRequest(page_size=2, page_token=page_token), metadata=me
        )
        seen += [(pb.EntryKind.Name(e.kind), e.points, e.order_id) for e in page.entries]
        if not (page_token := page.next_page_token):
            break
    assert seen == [
        ("ENTRY_KIND_REVOCATION", -40, "o-1"),
        ("ENTRY_KIND_PURCHASE", 25, "o-2"),
        ("ENTRY_KIND_PURCHASE", 40, "o-1"),
    ]
    balance = await stub.GetBalance(pb.GetBalanceRequest(), metadata=me)
    assert (balance.points, balance.entry_count) == (sum(points for _, points, _ in seen), len(seen))
    # Another customer's ledger is theirs (and an admin's) alone.
    other = await failure(
        stub.ListLedgerEntries(
            pb.ListLedgerEntriesRequest(user_id="c-1"), metadata=token(keys, "c-2", Role.CUSTOMER)
        )
    )
    assert other.code() == grpc.StatusCode.PERMISSION_DENIED
    admin = await stub.ListLedgerEntries(
        pb.ListLedgerEntriesRequest(user_id="c-1"), metadata=token(keys, "adm", Role.ADMIN)
    )
    assert len(admin.entries) == 3
    bad = await failure(stub.ListLedgerEntries(pb.ListLedgerEntriesRequest(page_size=500), metadata=me))
    assert details_of(bad)[1] == [("page_size", "must be between 0 and 100")]
    # A page follows on from the last entry of the one before (decision 41): a purchase recorded
    # meanwhile goes to the top, not into the next page; a token is for the user it came with.
    top = await stub.ListLedgerEntries(pb.ListLedgerEntriesRequest(page_size=2), metadata=me)
    await publish_event(loyalty, paid("o-4", 1_000), "o-4")
    await eventually(lambda: consumer.stats.handled == 4, what="o-4 paid")
    rest = await stub.ListLedgerEntries(
        pb.ListLedgerEntriesRequest(page_size=2, page_token=top.next_page_token), metadata=me
    )
    assert ([e.order_id for e in rest.entries], rest.next_page_token) == (["o-1"], "")
    named = pb.ListLedgerEntriesRequest(user_id="c-1", page_token=top.next_page_token)
    other = await failure(stub.ListLedgerEntries(named, metadata=me))
    assert details_of(other)[1] == [("page_token", OTHER_FILTERS)]
