"""payments over gRPC: validating and keeping payment methods, reading payments."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from a4co.orders.events.v1 import order_events_pb2 as order_events
from a4co.payments.v1 import payments_service_pb2 as pb
from a4co.payments.v1 import payments_service_pb2_grpc as pb_grpc
from a4co.type.v1 import money_pb2
from services.payments.__main__ import build
from services.payments.adapters.postgres import Methods
from services.platform.auth import Role
from services.platform.grpc.status import details_of
from services.platform.local_servers import ServerUrls
from tests.integration.services.harness import (
    Keys,
    RunningService,
    publish_event,
    running_service,
    settings_for,
    token,
)
from tests.support.metrics import coalesced
from tests.support.rpc import failure
from tests.support.waiting import eventually

SCHEMA = Path("services/payments/schema.sql")
PAN = "4242424242424242"


@pytest_asyncio.fixture
async def payments(urls: ServerUrls, prefix: str, keys: Keys) -> AsyncIterator[RunningService]:
    async with running_service(
        "payments", build, SCHEMA, settings_for("payments", urls, prefix, keys)
    ) as svc:
        yield svc


@pytest.fixture
def stub(payments: RunningService) -> pb_grpc.PaymentsServiceAsyncStub:
    return pb_grpc.PaymentsServiceStub(payments.channel)


def card(
    number: str = PAN, month: int = 12, year: int = 2031, cvc: str = "123"
) -> pb.ValidatePaymentMethodRequest:
    return pb.ValidatePaymentMethodRequest(
        card=pb.Card(number=number, exp_month=month, exp_year=year, cvc=cvc, holder_name="María López")
    )


async def test_a_valid_card_is_kept_as_a_token_never_as_a_number(
    stub: pb_grpc.PaymentsServiceAsyncStub, payments: RunningService, keys: Keys
) -> None:
    answer = await stub.ValidatePaymentMethod(
        card("4242 4242 4242 4242"), metadata=token(keys, "c-1", Role.CUSTOMER)
    )
    assert answer.valid
    assert (answer.method_type, answer.card_brand, answer.last_four) == (
        pb.PAYMENT_METHOD_TYPE_CARD,
        pb.CARD_BRAND_VISA,
        "4242",
    )
    assert answer.payment_method_id
    row = await payments.infra.pool.fetchrow("SELECT * FROM payment_methods")
    assert row is not None
    assert row["customer_id"] == "c-1"
    assert row["last_four"] == "4242"
    assert row["provider_token"].startswith("sbx_APPROVED_")
    everything = " ".join(str(v) for v in row.values())
    assert PAN not in everything


async def test_iban_and_bizum_are_checked_and_kept(
    stub: pb_grpc.PaymentsServiceAsyncStub, keys: Keys
) -> None:
    md = token(keys, "c-2", Role.CUSTOMER)
    sepa = await stub.ValidatePaymentMethod(
        pb.ValidatePaymentMethodRequest(
            sepa_debit=pb.SepaDebit(iban="ES91 2100 0418 4502 0005 1332", account_holder="Ana")
        ),
        metadata=md,
    )
    assert (sepa.valid, sepa.method_type, sepa.last_four) == (True, pb.PAYMENT_METHOD_TYPE_SEPA_DEBIT, "1332")
    bizum = await stub.ValidatePaymentMethod(
        pb.ValidatePaymentMethodRequest(bizum=pb.Bizum(phone_number="+34 612 345 678")), metadata=md
    )
    assert (bizum.valid, bizum.last_four) == (True, "5678")


async def test_a_wrong_method_is_answered_with_its_problems_and_not_kept(
    stub: pb_grpc.PaymentsServiceAsyncStub, payments: RunningService, keys: Keys
) -> None:
    answer = await stub.ValidatePaymentMethod(
        card("4242424242424241", month=1, year=2020), metadata=token(keys, "c-3", Role.CUSTOMER)
    )
    assert not answer.valid
    assert {(p.field, p.reason) for p in answer.problems} == {
        ("card.number", "LUHN_CHECK_FAILED"),
        ("card.exp_year", "CARD_EXPIRED"),
    }
    assert answer.payment_method_id == ""
    assert await payments.infra.pool.fetchval("SELECT count(*) FROM payment_methods") == 0


async def test_malformed_requests_and_missing_tokens_are_refused(
    stub: pb_grpc.PaymentsServiceAsyncStub, keys: Keys
) -> None:
    md = token(keys, "c-4", Role.CUSTOMER)
    empty = await failure(stub.ValidatePaymentMethod(pb.ValidatePaymentMethodRequest(), metadata=md))
    assert empty.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details_of(empty)[1] == [("method", "set one of card, sepa_debit, bizum")]
    partial = await failure(
        stub.ValidatePaymentMethod(pb.ValidatePaymentMethodRequest(card=pb.Card(number=PAN)), metadata=md)
    )
    assert {f for f, _ in details_of(partial)[1]} == {"card.exp_month", "card.exp_year", "card.cvc"}
    anonymous = await failure(stub.ValidatePaymentMethod(card()))
    assert anonymous.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_payment_is_shown_to_its_customer_only(
    stub: pb_grpc.PaymentsServiceAsyncStub, payments: RunningService, keys: Keys
) -> None:
    await payments.infra.pool.execute(
        "INSERT INTO payments (payment_id, order_id, customer_id, amount_cents, currency_code, status,"
        " method_type, last_four)"
        " VALUES (gen_random_uuid(), 'o-1', 'c-5', 2450, 'EUR', 'succeeded', 'card', '4242')"
    )
    mine = await stub.GetPayment(
        pb.GetPaymentRequest(order_id="o-1"), metadata=token(keys, "c-5", Role.CUSTOMER)
    )
    assert (mine.payment.amount.amount_cents, mine.payment.status) == (2450, pb.PAYMENT_STATUS_SUCCEEDED)
    other = await failure(
        stub.GetPayment(pb.GetPaymentRequest(order_id="o-1"), metadata=token(keys, "c-6", Role.CUSTOMER))
    )
    assert other.code() == grpc.StatusCode.PERMISSION_DENIED
    missing = await failure(
        stub.GetPayment(pb.GetPaymentRequest(order_id="o-2"), metadata=token(keys, "c-5", Role.CUSTOMER))
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    admin = await stub.GetPayment(
        pb.GetPaymentRequest(order_id="o-1"), metadata=token(keys, "root", Role.ADMIN)
    )
    assert admin.payment.customer_id == "c-5"


async def test_a_stored_method_is_shown_to_its_customer_only(
    stub: pb_grpc.PaymentsServiceAsyncStub, keys: Keys
) -> None:
    owner = token(keys, "c-7", Role.CUSTOMER)
    method_id = (await stub.ValidatePaymentMethod(card(), metadata=owner)).payment_method_id
    shown = await stub.GetPaymentMethod(
        pb.GetPaymentMethodRequest(payment_method_id=method_id), metadata=owner
    )
    assert (shown.payment_method.customer_id, shown.payment_method.last_four) == ("c-7", "4242")
    other = await failure(
        stub.GetPaymentMethod(
            pb.GetPaymentMethodRequest(payment_method_id=method_id),
            metadata=token(keys, "c-8", Role.CUSTOMER),
        )
    )
    assert other.code() == grpc.StatusCode.PERMISSION_DENIED
    unknown = await failure(
        stub.GetPaymentMethod(pb.GetPaymentMethodRequest(payment_method_id="x"), metadata=owner)
    )
    assert unknown.code() == grpc.StatusCode.NOT_FOUND


async def test_a_method_read_once_is_then_read_from_memory_for_its_customer_only(
    stub: pb_grpc.PaymentsServiceAsyncStub, payments: RunningService, keys: Keys
) -> None:
    owner = token(keys, "c-9", Role.CUSTOMER)
    method_id = (await stub.ValidatePaymentMethod(card(), metadata=owner)).payment_method_id
    request = pb.GetPaymentMethodRequest(payment_method_id=method_id)
    await stub.GetPaymentMethod(request, metadata=owner)
    # Gone from the table (a kept method never is): the next reads make no statement.
    await payments.infra.pool.execute("DELETE FROM payment_methods")
    shown = await stub.GetPaymentMethod(request, metadata=owner)
    assert (shown.payment_method.payment_method_id, shown.payment_method.customer_id) == (method_id, "c-9")
    other = await failure(stub.GetPaymentMethod(request, metadata=token(keys, "c-10", Role.CUSTOMER)))
    assert other.code() == grpc.StatusCode.PERMISSION_DENIED
    # A method never read is not in memory.
    unread = (await stub.ValidatePaymentMethod(card(), metadata=owner)).payment_method_id
    await payments.infra.pool.execute("DELETE FROM payment_methods")
    missing = await failure(
        stub.GetPaymentMethod(pb.GetPaymentMethodRequest(payment_method_id=unread), metadata=owner)
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND


async def test_methods_validated_at_once_are_each_kept_for_their_own_customer(
    stub: pb_grpc.PaymentsServiceAsyncStub, payments: RunningService, keys: Keys
) -> None:
    """The methods of calls waiting together are written with one statement (decision 28)."""
    customers = [f"c-at-once-{i}" for i in range(12)]
    callers = coalesced("payment_methods_added")
    answers = await asyncio.gather(
        *(
            stub.ValidatePaymentMethod(
                pb.ValidatePaymentMethodRequest(bizum=pb.Bizum(phone_number=f"+34 6{i:08d}")),
                metadata=token(keys, customer, Role.CUSTOMER),
            )
            for i, customer in enumerate(customers)
        )
    )
    rows = await payments.infra.pool.fetch(
        "SELECT payment_method_id::text, customer_id, last_four FROM payment_methods"
        " WHERE customer_id = ANY($1)",
        customers,
    )
    kept = {r["payment_method_id"]: (r["customer_id"], r["last_four"]) for r in rows}
    assert kept == {
        a.payment_method_id: (c, f"{i:04d}") for i, (a, c) in enumerate(zip(answers, customers, strict=True))
    }
    assert coalesced("payment_methods_added") - callers == len(customers)


async def test_a_failed_write_fails_its_calls_and_the_next_are_kept(
    stub: pb_grpc.PaymentsServiceAsyncStub, payments: RunningService, keys: Keys
) -> None:
    owner = token(keys, "c-refused", Role.CUSTOMER)
    await payments.infra.pool.execute(
        "ALTER TABLE payment_methods ADD CONSTRAINT refuse_all CHECK (false) NOT VALID"
    )
    refused = await asyncio.gather(
        *(failure(stub.ValidatePaymentMethod(card(), metadata=owner)) for _ in range(4))
    )
    assert {e.code() for e in refused} == {grpc.StatusCode.INTERNAL}
    await payments.infra.pool.execute("ALTER TABLE payment_methods DROP CONSTRAINT refuse_all")
    method_id = (await stub.ValidatePaymentMethod(card(), metadata=owner)).payment_method_id
    assert (
        await payments.infra.pool.fetchval(
            "SELECT customer_id FROM payment_methods WHERE payment_method_id = $1::uuid", method_id
        )
        == "c-refused"
    )
    assert await payments.infra.pool.fetchval("SELECT count(*) FROM payment_methods") == 1


def placed(customer_id: str, payment_method_id: str) -> order_events.OrderCreated:
    return order_events.OrderCreated(
        order_id=str(uuid.uuid4()),
        customer_id=customer_id,
        artisan_id="a-1",
        payment_method_id=payment_method_id,
        total=money_pb2.Money(currency_code="EUR", amount_cents=1250),
    )


async def outcome(payments: RunningService, order_id: str) -> tuple[str, str]:
    """The charge of an order, once it is recorded: (status, failure reason)."""
    sql = "SELECT status, failure_reason FROM payments WHERE order_id = $1"

    async def recorded() -> bool:
        return await payments.infra.pool.fetchrow(sql, order_id) is not None

    await eventually(recorded, what=f"the charge of {order_id}")
    row = await payments.infra.pool.fetchrow(sql, order_id)
    assert row is not None
    return row["status"], row["failure_reason"]


async def test_an_order_is_charged_with_the_method_checked_before_from_memory(
    stub: pb_grpc.PaymentsServiceAsyncStub, payments: RunningService, keys: Keys
) -> None:
    owner = token(keys, "c-21", Role.CUSTOMER)
    checked = (await stub.ValidatePaymentMethod(card(), metadata=owner)).payment_method_id
    await stub.GetPaymentMethod(pb.GetPaymentMethodRequest(payment_method_id=checked), metadata=owner)
    unread = (await stub.ValidatePaymentMethod(card(), metadata=owner)).payment_method_id
    # The method read before is charged from memory: its row is gone (a kept method never is).
    await payments.infra.pool.execute("DELETE FROM payment_methods WHERE payment_method_id = $1", checked)
    first = placed("c-21", checked)
    await publish_event(payments, first, first.order_id)
    assert await outcome(payments, first.order_id) == ("succeeded", "")
    # A method never read is read in the charge's transaction, and kept from then on.
    second = placed("c-21", unread)
    await publish_event(payments, second, second.order_id)
    assert await outcome(payments, second.order_id) == ("succeeded", "")
    await payments.infra.pool.execute("DELETE FROM payment_methods")
    third = placed("c-21", unread)
    await publish_event(payments, third, third.order_id)
    assert await outcome(payments, third.order_id) == ("succeeded", "")


def reason(error: grpc.aio.AioRpcError) -> str:
    info = details_of(error)[0]
    assert info is not None
    return str(info.reason)


async def test_a_customer_lists_their_methods_newest_first_and_deletes_one(
    stub: pb_grpc.PaymentsServiceAsyncStub, keys: Keys
) -> None:
    owner = token(keys, "c-30", Role.CUSTOMER)
    ids = [
        (await stub.ValidatePaymentMethod(request, metadata=owner)).payment_method_id
        for request in (
            card(),
            pb.ValidatePaymentMethodRequest(
                sepa_debit=pb.SepaDebit(iban="ES91 2100 0418 4502 0005 1332", account_holder="Ana Ruiz")
            ),
            pb.ValidatePaymentMethodRequest(bizum=pb.Bizum(phone_number="612345678")),
        )
    ]

    async def listed(page_size: int = 20, page_token: str = "") -> pb.ListPaymentMethodsResponse:
        request = pb.ListPaymentMethodsRequest(page_size=page_size, page_token=page_token)
        return await stub.ListPaymentMethods(request, metadata=owner)

    first = await listed(page_size=2)
    assert [m.payment_method_id for m in first.payment_methods] == ids[:0:-1]
    assert [m.last_four for m in first.payment_methods] == ["5678", "1332"]
    assert all(m.HasField("create_time") and not m.HasField("delete_time") for m in first.payment_methods)
    deleted = await stub.DeletePaymentMethod(
        pb.DeletePaymentMethodRequest(payment_method_id=ids[2]), metadata=owner
    )
    assert deleted.payment_method.HasField("delete_time")
    # The page after the first follows on from its last method, whatever was deleted meanwhile.
    rest = await listed(page_size=2, page_token=first.next_page_token)
    assert ([m.payment_method_id for m in rest.payment_methods], rest.next_page_token) == ([ids[0]], "")
    assert [m.payment_method_id for m in (await listed()).payment_methods] == ids[1::-1]
    gone = await failure(
        stub.GetPaymentMethod(pb.GetPaymentMethodRequest(payment_method_id=ids[2]), metadata=owner)
    )
    assert (gone.code(), reason(gone)) == (grpc.StatusCode.NOT_FOUND, "PAYMENT_METHOD_DELETED")
    again = await stub.DeletePaymentMethod(
        pb.DeletePaymentMethodRequest(payment_method_id=ids[2]), metadata=owner
    )
    assert again.payment_method.delete_time == deleted.payment_method.delete_time, "deleted once"
    # Someone else's methods are theirs, and an admin's to see and delete.
    someone = token(keys, "c-31", Role.CUSTOMER)
    for call in (
        stub.DeletePaymentMethod(pb.DeletePaymentMethodRequest(payment_method_id=ids[0]), metadata=someone),
        stub.ListPaymentMethods(pb.ListPaymentMethodsRequest(customer_id="c-30"), metadata=someone),
    ):
        assert (await failure(call)).code() == grpc.StatusCode.PERMISSION_DENIED
    assert (
        await stub.ListPaymentMethods(pb.ListPaymentMethodsRequest(), metadata=someone)
    ).payment_methods == []
    admin = token(keys, "adm", Role.ADMIN)
    theirs = await stub.ListPaymentMethods(pb.ListPaymentMethodsRequest(customer_id="c-30"), metadata=admin)
    assert len(theirs.payment_methods) == 2
    unknown = await failure(
        stub.DeletePaymentMethod(pb.DeletePaymentMethodRequest(payment_method_id="nope"), metadata=owner)
    )
    assert (unknown.code(), reason(unknown)) == (
        grpc.StatusCode.NOT_FOUND,
        "PAYMENT_METHOD_NOT_FOUND",
    )
    bad = await failure(stub.ListPaymentMethods(pb.ListPaymentMethodsRequest(page_size=101), metadata=owner))
    assert [f for f, _ in details_of(bad)[1]] == ["page_size"]


async def test_an_order_placed_before_its_method_was_deleted_is_still_charged(
    stub: pb_grpc.PaymentsServiceAsyncStub, payments: RunningService, keys: Keys
) -> None:
    owner = token(keys, "c-32", Role.CUSTOMER)
    method_id = (await stub.ValidatePaymentMethod(card(), metadata=owner)).payment_method_id
    await stub.DeletePaymentMethod(pb.DeletePaymentMethodRequest(payment_method_id=method_id), metadata=owner)
    order = placed("c-32", method_id)
    await publish_event(payments, order, order.order_id)
    assert await outcome(payments, order.order_id) == ("succeeded", "")


async def test_another_replica_stops_taking_a_deleted_method_once_its_copy_is_old(
    stub: pb_grpc.PaymentsServiceAsyncStub, payments: RunningService, keys: Keys
) -> None:
    owner = token(keys, "c-33", Role.CUSTOMER)
    method_id = (await stub.ValidatePaymentMethod(card(), metadata=owner)).payment_method_id
    other = Methods(payments.infra.pool, remember=10, kept_s=1.0)  # another process's memory
    assert (kept := await other.get(method_id)) is not None
    assert kept.deleted_at is None
    await stub.DeletePaymentMethod(pb.DeletePaymentMethodRequest(payment_method_id=method_id), metadata=owner)
    started = time.monotonic()
    still = await other.get(method_id)
    assert still is not None
    if time.monotonic() - started < 0.5:  # surely inside its 1 s: read from memory
        assert still.deleted_at is None

    async def deleted_there() -> bool:
        method = await other.get(method_id)
        return method is not None and method.deleted_at is not None

    await eventually(deleted_there, timeout=10, what="the deletion seen once the copy is 1 s old")


async def test_deleting_a_method_gone_from_the_table_since_it_was_read_is_not_found(
    stub: pb_grpc.PaymentsServiceAsyncStub, payments: RunningService, keys: Keys
) -> None:
    owner = token(keys, "c-34", Role.CUSTOMER)
    method_id = (await stub.ValidatePaymentMethod(card(), metadata=owner)).payment_method_id
    await stub.GetPaymentMethod(pb.GetPaymentMethodRequest(payment_method_id=method_id), metadata=owner)
    await payments.infra.pool.execute("DELETE FROM payment_methods")  # kept in memory, no longer stored
    gone = await failure(
        stub.DeletePaymentMethod(pb.DeletePaymentMethodRequest(payment_method_id=method_id), metadata=owner)
    )
    assert (gone.code(), reason(gone)) == (grpc.StatusCode.NOT_FOUND, "PAYMENT_METHOD_NOT_FOUND")
