"""End to end: every service as its own process under the supervisor, driven through gRPC like a
client, with the invariants checked over the schemas afterwards."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
import nats
import pytest
import pytest_asyncio
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry.proto.trace.v1 import trace_pb2

from a4co.analytics.v1 import analytics_service_pb2 as analytics_pb
from a4co.analytics.v1 import analytics_service_pb2_grpc as analytics_grpc
from a4co.artisans.v1 import artisans_service_pb2 as artisans_pb
from a4co.artisans.v1 import artisans_service_pb2_grpc as artisans_grpc
from a4co.catalog.v1 import catalog_service_pb2 as catalog_pb
from a4co.catalog.v1 import catalog_service_pb2_grpc as catalog_grpc
from a4co.cms.v1 import cms_service_pb2 as cms_pb
from a4co.cms.v1 import cms_service_pb2_grpc as cms_grpc
from a4co.identity.v1 import identity_service_pb2 as identity_pb
from a4co.identity.v1 import identity_service_pb2_grpc as identity_grpc
from a4co.inventory.v1 import inventory_service_pb2 as inventory_pb
from a4co.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from a4co.loyalty.v1 import loyalty_service_pb2 as loyalty_pb
from a4co.loyalty.v1 import loyalty_service_pb2_grpc as loyalty_grpc
from a4co.notifications.v1 import notifications_service_pb2 as notifications_pb
from a4co.notifications.v1 import notifications_service_pb2_grpc as notifications_grpc
from a4co.orders.v1 import orders_service_pb2 as orders_pb
from a4co.orders.v1 import orders_service_pb2_grpc as orders_grpc
from a4co.payments.v1 import payments_service_pb2 as payments_pb
from a4co.payments.v1 import payments_service_pb2_grpc as payments_grpc
from a4co.type.v1 import address_pb2, lat_lng_pb2, money_pb2
from services.cli.check import violations
from services.launcher.supervisor import SERVICES, Supervisor
from services.platform.events.permissions import COMMAND
from services.platform.events.topology import DLQ_STREAM, Topology
from services.platform.grpc.status import details_of
from services.platform.local_servers import ServerUrls
from services.platform.resilience import Backoff
from tests.integration.services.harness import Keys
from tests.support.cli import run_a4co
from tests.support.nats_accounts import PermissionedNats
from tests.support.otlp import Collector
from tests.support.rpc import failure
from tests.support.waiting import eventually

Metadata = tuple[tuple[str, str], ...]
PREFIX = "e" + uuid.uuid4().hex[:12]


class Client:
    """Channels to every service, as another team's client would hold them."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.channels = {n: grpc.aio.insecure_channel(e.grpc) for n, e in supervisor.endpoints.items()}
        self.identity = identity_grpc.IdentityServiceStub(self.channels["identity"])
        self.artisans = artisans_grpc.ArtisansServiceStub(self.channels["artisans"])
        self.inventory = inventory_grpc.InventoryServiceStub(self.channels["inventory"])
        self.payments = payments_grpc.PaymentsServiceStub(self.channels["payments"])
        self.orders = orders_grpc.OrdersServiceStub(self.channels["orders"])
        self.catalog = catalog_grpc.CatalogServiceStub(self.channels["catalog"])
        self.loyalty = loyalty_grpc.LoyaltyServiceStub(self.channels["loyalty"])
        self.notifications = notifications_grpc.NotificationsServiceStub(self.channels["notifications"])

    async def sign_up(self, email: str, role: identity_pb.Role.ValueType) -> tuple[str, Metadata]:
        password = "contraseña-segura-2026"
        user = await self.identity.Register(
            identity_pb.RegisterRequest(
                email=email, password=password, display_name=email.split("@")[0], role=role
            )
        )
        login = await self.identity.Login(identity_pb.LoginRequest(email=email, password=password))
        return user.user.user_id, (("authorization", f"Bearer {login.tokens.access_token}"),)

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()


@pytest.fixture(scope="module")
def permissioned_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PermissionedNats]:
    """The deployment's own NATS, whose users are its services, each allowed only what
    `a4co nats-permissions` derives for it (decision 68): every flow here runs within them."""
    server = PermissionedNats(Path(tmp_path_factory.mktemp("nats")) / "data", PREFIX)
    server.start()
    yield server
    server.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def collector() -> AsyncIterator[Collector]:
    """Where the services export their spans over OTLP, as they would to Jaeger under compose."""
    receiver = Collector()
    await receiver.start()
    yield receiver
    await receiver.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def deployment(
    urls: ServerUrls,
    keys: Keys,
    permissioned_nats: PermissionedNats,
    collector: Collector,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Supervisor, Client, str]]:
    run_dir = Path(tmp_path_factory.mktemp("run"))
    env = dict(
        os.environ,
        **{**urls.as_env(), "A4CO_NATS_URL": permissioned_nats.url_of(COMMAND)},
        A4CO_PREFIX=PREFIX,
        A4CO_JWT_PRIVATE_KEY_FILE=str(keys.private_file),
        A4CO_JWT_PUBLIC_KEY_FILE=str(keys.public_file),
        A4CO_SAGA_PAYMENT_TIMEOUT_S="10",
        A4CO_SAGA_RESERVATION_TIMEOUT_S="10",
        A4CO_NOTIFICATIONS_DIR=str(run_dir / "mail"),
        A4CO_LOG_LEVEL="WARNING",
        A4CO_PEER_TIMEOUT_S="5",
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="500",  # milliseconds between exports (5 s by default)
    )
    own_user = {s: {"A4CO_NATS_URL": permissioned_nats.url_of(s)} for s in SERVICES}
    supervisor = Supervisor(run_dir, env, service_env=own_user)
    await supervisor.start()
    client = Client(supervisor)
    yield supervisor, client, PREFIX
    await client.close()
    await supervisor.stop()
    assert permissioned_nats.violations() == [], "a service did what its NATS user may not"


async def shop_with(client: Client, stock: int) -> tuple[str, Metadata]:
    _, artisan = await client.sign_up(f"taller-{uuid.uuid4().hex[:6]}@ubeda.es", identity_pb.ROLE_ARTISAN)
    await client.artisans.OnboardArtisan(
        artisans_pb.OnboardArtisanRequest(
            request_id=str(uuid.uuid4()),
            display_name="Alfarería Tito",
            craft="ceramica",
            locality="Úbeda",
            location=lat_lng_pb2.LatLng(latitude=38.0133, longitude=-3.3706),
        ),
        metadata=artisan,
    )
    published = await client.artisans.PublishProduct(
        artisans_pb.PublishProductRequest(
            request_id=str(uuid.uuid4()),
            name="Plato de cerámica verde",
            category="ceramica",
            price=money_pb2.Money(currency_code="EUR", amount_cents=2500),
            initial_stock=stock,
        ),
        metadata=artisan,
    )
    product_id = published.product.product_id

    async def on_sale() -> bool:
        try:
            await client.inventory.GetStock(inventory_pb.GetStockRequest(product_id=product_id))
            await client.catalog.GetProduct(catalog_pb.GetProductRequest(product_id=product_id))
        except grpc.aio.AioRpcError:
            return False
        return True

    await eventually(on_sale, timeout=30, what="the product on sale everywhere")
    return product_id, artisan


async def card(client: Client, customer: Metadata, number: str = "4242424242424242") -> str:
    answer = await client.payments.ValidatePaymentMethod(
        payments_pb.ValidatePaymentMethodRequest(
            card=payments_pb.Card(number=number, exp_month=12, exp_year=2031, cvc="123")
        ),
        metadata=customer,
    )
    return answer.payment_method_id


async def order(
    client: Client, customer: Metadata, product_id: str, quantity: int, method: str, redeem_points: int = 0
) -> orders_pb.Order:
    placed = await client.orders.CreateOrder(
        orders_pb.CreateOrderRequest(
            request_id=str(uuid.uuid4()),
            lines=[orders_pb.OrderLineRequest(product_id=product_id, quantity=quantity)],
            payment_method_id=method,
            delivery_address=address_pb2.Address(street="Calle Real 1", locality="Baeza"),
            delivery_location=lat_lng_pb2.LatLng(latitude=37.9938, longitude=-3.47),
            redeem_points=redeem_points,
        ),
        metadata=customer,
    )
    return placed.order


async def settled(
    client: Client, customer: Metadata, order_id: str, status: int, timeout: float = 30
) -> None:
    async def reached() -> bool:
        got = await client.orders.GetOrder(orders_pb.GetOrderRequest(order_id=order_id), metadata=customer)
        return got.order.status == status

    await eventually(reached, timeout=timeout, what=f"order {order_id} in status {status}")


async def sound(urls: ServerUrls, prefix: str) -> None:
    async def holds() -> bool:
        return await violations(urls.database_url, Topology(prefix)) == []

    try:
        await eventually(holds, timeout=60, what="the invariants")
    except AssertionError:
        raise AssertionError(await violations(urls.database_url, Topology(prefix))) from None


async def page_gone(cms: cms_grpc.CmsServiceAsyncStub, user_id: str) -> bool:
    """Whether cms answers that a user's public page does not exist."""
    try:
        await cms.GetPublicProfile(cms_pb.GetPublicProfileRequest(user_id=user_id))
    except grpc.aio.AioRpcError as error:
        return error.code() == grpc.StatusCode.NOT_FOUND
    return False


async def test_happy_path_to_delivered_across_processes(
    deployment: tuple[Supervisor, Client, str], urls: ServerUrls
) -> None:
    supervisor, client, prefix = deployment
    product_id, artisan = await shop_with(client, stock=5)
    signing_up = Timestamp()
    signing_up.FromDatetime(datetime.now(UTC))
    customer_id, customer = await client.sign_up(
        f"ana-{uuid.uuid4().hex[:6]}@jaen.es", identity_pb.ROLE_CUSTOMER
    )
    # The customer's app watches their notifications from the sign-up on (decision 39).
    watching = client.notifications.WatchNotifications(
        notifications_pb.WatchNotificationsRequest(start_time=signing_up), metadata=customer
    )
    placed = await order(client, customer, product_id, 2, await card(client, customer))
    await settled(client, customer, placed.order_id, orders_pb.ORDER_STATUS_CONFIRMED)
    await client.orders.MarkOrderShipped(
        orders_pb.MarkOrderShippedRequest(order_id=placed.order_id), metadata=artisan
    )
    await client.orders.MarkOrderDelivered(
        orders_pb.MarkOrderDeliveredRequest(order_id=placed.order_id), metadata=artisan
    )

    async def everyone_knows() -> bool:
        stock = (await client.inventory.GetStock(inventory_pb.GetStockRequest(product_id=product_id))).stock
        product = (
            await client.catalog.GetProduct(catalog_pb.GetProductRequest(product_id=product_id))
        ).product
        balance = await client.loyalty.GetBalance(loyalty_pb.GetBalanceRequest(), metadata=customer)
        listed = await client.notifications.ListNotifications(
            notifications_pb.ListNotificationsRequest(), metadata=customer
        )
        return (
            (stock.on_hand, stock.reserved) == (3, 0)
            and product.available_quantity == 3
            and balance.points == 50 + placed.total.amount_cents // 100
            and "Pedido entregado" in {n.title for n in listed.notifications}
        )

    await eventually(everyone_knows, timeout=30, what="stock, catalogue, points and notifications")
    listed = await client.notifications.ListNotifications(
        notifications_pb.ListNotificationsRequest(), metadata=customer
    )
    streamed: list[str] = []
    async with asyncio.timeout(30):
        while len(streamed) < len(listed.notifications):
            response = await watching.read()
            assert isinstance(response, notifications_pb.WatchNotificationsResponse), "the stream ended"
            streamed.append(response.notification.notification_id)
    watching.cancel()
    # Each once (pushed in the order their transactions committed, which two consumers may
    # make differ from the order of their creation).
    assert sorted(streamed) == sorted(n.notification_id for n in listed.notifications)

    start, end = Timestamp(), Timestamp()
    start.FromDatetime(datetime.now(UTC) - timedelta(hours=1))
    end.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    analytics = analytics_grpc.AnalyticsServiceStub(client.channels["analytics"])

    async def sale_counted() -> bool:
        report = await analytics.GetSalesReport(
            analytics_pb.GetSalesReportRequest(start_time=start, end_time=end), metadata=artisan
        )
        return (report.orders_delivered, report.units_sold) == (1, 2)

    await eventually(sale_counted, timeout=30, what="the sale in the artisan's report")
    cms = cms_grpc.CmsServiceStub(client.channels["cms"])

    async def a_customer_profile() -> bool:
        # cms learns of the customer from UserRegistered, like the others: eventually, not at once.
        try:
            found = await cms.GetPublicProfile(cms_pb.GetPublicProfileRequest(user_id=customer_id))
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return False
        return found.profile.kind == cms_pb.PROFILE_KIND_CUSTOMER

    await eventually(a_customer_profile, timeout=30, what="the customer's public profile")
    await sound(urls, prefix)
    del supervisor


async def test_one_trace_spans_every_process_an_order_goes_through(
    deployment: tuple[Supervisor, Client, str], collector: Collector
) -> None:
    """A client's trace context on CreateOrder: each service process exports over OTLP its part of
    that one trace, the synchronous checks and every saga step the order's events caused."""
    supervisor, client, prefix = deployment
    product_id, _ = await shop_with(client, stock=5)
    _, customer = await client.sign_up(f"luz-{uuid.uuid4().hex[:6]}@jaen.es", identity_pb.ROLE_CUSTOMER)
    method = await card(client, customer)
    trace_id, client_span = os.urandom(16), os.urandom(8)
    traced = (*customer, ("traceparent", f"00-{trace_id.hex()}-{client_span.hex()}-01"))
    placed = await order(client, traced, product_id, 1, method)
    await settled(client, customer, placed.order_id, orders_pb.ORDER_STATUS_CONFIRMED)
    server, consumer = trace_pb2.Span.SPAN_KIND_SERVER, trace_pb2.Span.SPAN_KIND_CONSUMER
    wanted = {
        ("a4co-orders", server, "/a4co.orders.v1.OrdersService/CreateOrder"),
        ("a4co-inventory", server, "/a4co.inventory.v1.InventoryService/CheckStock"),
        ("a4co-geo", server, "/a4co.geo.v1.GeoService/QuoteDelivery"),
        ("a4co-payments", consumer, "a4co.orders.order.created process"),  # payments charges
        ("a4co-orders", consumer, "a4co.payments.payment.processed process"),  # marks it paid
        ("a4co-inventory", consumer, "a4co.orders.order.status_changed process"),  # reserves
        ("a4co-orders", consumer, "a4co.inventory.stock.reserved process"),  # confirms
    }

    def received() -> set[tuple[str, int, str]]:
        spans = collector.trace(trace_id)
        return {(s.service, s.span.kind, s.span.name.removeprefix(f"{prefix}.")) for s in spans}

    def orphans() -> list[str]:
        """The spans of the trace whose parent is neither in it nor the client's call."""
        spans = collector.trace(trace_id)
        known = {s.span.span_id for s in spans} | {client_span}
        return [f"{s.service} {s.span.name}" for s in spans if s.span.parent_span_id not in known]

    try:
        await eventually(lambda: wanted <= received() and not orphans(), timeout=30, what="the spans")
    except AssertionError:
        raise AssertionError(f"missing {sorted(wanted - received())}, orphans {orphans()}") from None
    # The operator's command names the same trace, as the order's events carried it on.
    code, out = await run_a4co("trace", placed.order_id, env=supervisor.env)
    assert code == 0, out
    [flow] = [line for line in out.splitlines() if "CreateOrder (correlation" in line]
    assert flow.endswith(f", trace {trace_id.hex()})"), out


async def test_a_forgotten_password_is_reset_with_the_code_mailed_by_notifications(
    deployment: tuple[Supervisor, Client, str],
) -> None:
    supervisor, client, _ = deployment
    email = f"luz-{uuid.uuid4().hex[:6]}@jaen.es"
    _, before = await client.sign_up(email, identity_pb.ROLE_CUSTOMER)
    await client.identity.RequestPasswordReset(identity_pb.RequestPasswordResetRequest(email=email))
    outbox = supervisor.run_dir / "mail" / "outbox.jsonl"

    def codes() -> list[str]:
        lines = outbox.read_text(encoding="utf-8").splitlines() if outbox.exists() else []
        mails = [json.loads(line) for line in lines]
        return [
            m["body"].split("contraseña de a4co es ")[1][:11]
            for m in mails
            if m["to"] == email and m["subject"] == "Restablecer tu contraseña"
        ]

    await eventually(lambda: len(codes()) == 1, timeout=30, what="the code mailed")
    new = "clave-nueva-de-luz-2026"
    reset = await client.identity.ResetPassword(
        identity_pb.ResetPasswordRequest(email=email, code=codes()[0], new_password=new)
    )
    assert reset.ended_sessions == 2  # sign-up's and sign_up's Login
    refused = await failure(client.identity.GetProfile(identity_pb.GetProfileRequest(), metadata=before))
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
    login = await client.identity.Login(identity_pb.LoginRequest(email=email, password=new))
    me = (("authorization", f"Bearer {login.tokens.access_token}"),)

    async def told() -> list[str]:
        listed = await client.notifications.ListNotifications(
            notifications_pb.ListNotificationsRequest(page_size=10), metadata=me
        )
        return [n.title for n in listed.notifications]

    async def both_told() -> bool:
        return "Contraseña restablecida" in await told()

    await eventually(both_told, timeout=30, what="the reset told")
    assert await told() == ["Contraseña restablecida", "Restablecer tu contraseña", "¡Bienvenido a a4co!"]


async def test_a_customer_closes_their_account_and_every_service_forgets_them(
    deployment: tuple[Supervisor, Client, str], urls: ServerUrls
) -> None:
    _, client, prefix = deployment
    email = f"sol-{uuid.uuid4().hex[:6]}@jaen.es"
    user_id, me = await client.sign_up(email, identity_pb.ROLE_CUSTOMER)
    method = await card(client, me)
    cms = cms_grpc.CmsServiceStub(client.channels["cms"])

    async def page_shown() -> bool:
        try:
            await cms.GetPublicProfile(cms_pb.GetPublicProfileRequest(user_id=user_id))
        except grpc.aio.AioRpcError:
            return False
        return True

    await eventually(page_shown, timeout=30, what="the public page made")
    closed = await client.identity.DeleteAccount(
        identity_pb.DeleteAccountRequest(current_password="contraseña-segura-2026"), metadata=me
    )
    assert closed.ended_sessions == 2  # sign-up's and sign_up's Login
    refused = await failure(client.identity.GetProfile(identity_pb.GetProfileRequest(), metadata=me))
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED

    await eventually(lambda: page_gone(cms, user_id), timeout=30, what="the public page gone")

    async def card_deleted() -> bool:
        conn = await asyncpg.connect(urls.database_url)
        try:
            return bool(
                await conn.fetchval(
                    f'SELECT deleted_at IS NOT NULL FROM "{prefix}_payments".payment_methods'
                    " WHERE payment_method_id = $1",
                    method,
                )
            )
        finally:
            await conn.close()

    await eventually(card_deleted, timeout=30, what="the saved card deleted")
    # The address is free: signed up again, it is a new user.
    again, _ = await client.sign_up(email, identity_pb.ROLE_CUSTOMER)
    assert again != user_id


async def test_an_artisan_leaves_ships_what_was_ordered_then_closes_their_account(
    deployment: tuple[Supervisor, Client, str],
) -> None:
    _, client, _ = deployment
    product_id, artisan = await shop_with(client, stock=5)
    workshop = await client.artisans.GetArtisan(artisans_pb.GetArtisanRequest(), metadata=artisan)
    artisan_id = workshop.artisan.artisan_id
    _, customer = await client.sign_up(f"eva-{uuid.uuid4().hex[:6]}@jaen.es", identity_pb.ROLE_CUSTOMER)
    method = await card(client, customer)
    placed = await order(client, customer, product_id, 1, method)
    await settled(client, customer, placed.order_id, orders_pb.ORDER_STATUS_CONFIRMED)
    forgotten = await order(client, customer, product_id, 1, method)  # never shipped
    await settled(client, customer, forgotten.order_id, orders_pb.ORDER_STATUS_CONFIRMED)

    left = await client.artisans.OffboardArtisan(artisans_pb.OffboardArtisanRequest(), metadata=artisan)
    assert left.withdrawn_products == 1
    cms = cms_grpc.CmsServiceStub(client.channels["cms"])

    async def followed() -> bool:
        try:
            page = await cms.GetPublicProfile(cms_pb.GetPublicProfileRequest(user_id=artisan_id))
        except grpc.aio.AioRpcError:
            return False
        try:
            await client.catalog.GetProduct(catalog_pb.GetProductRequest(product_id=product_id))
        except grpc.aio.AioRpcError as error:
            return error.code() == grpc.StatusCode.NOT_FOUND and page.profile.HasField("offboard_time")
        return False

    await eventually(followed, timeout=30, what="the page saying it left, the product off the catalogue")
    refused = await failure(order(client, customer, product_id, 1, method))
    assert details_of(refused)[0].reason == "PRODUCT_WITHDRAWN"  # type: ignore[union-attr]
    # What was ordered before it left goes on to its end.
    await client.orders.MarkOrderShipped(
        orders_pb.MarkOrderShippedRequest(order_id=placed.order_id), metadata=artisan
    )
    await client.orders.MarkOrderDelivered(
        orders_pb.MarkOrderDeliveredRequest(order_id=placed.order_id), metadata=artisan
    )
    await settled(client, customer, placed.order_id, orders_pb.ORDER_STATUS_DELIVERED)

    async def closed() -> bool:  # once identity has heard that the workshop left
        try:
            await client.identity.DeleteAccount(
                identity_pb.DeleteAccountRequest(current_password="contraseña-segura-2026"), metadata=artisan
            )
        except grpc.aio.AioRpcError as error:
            reason = details_of(error)[0]
            if reason is None or reason.reason != "ACCOUNT_NOT_SELF_SERVICE":
                raise
            return False
        return True

    await eventually(closed, timeout=30, what="the artisan's account closed")
    # What they did not ship is cancelled and refunded (decision 55).
    await settled(client, customer, forgotten.order_id, orders_pb.ORDER_STATUS_CANCELLED)
    got = await client.orders.GetOrder(
        orders_pb.GetOrderRequest(order_id=forgotten.order_id), metadata=customer
    )
    assert got.order.cancel_reason == "ARTISAN_LEFT"

    async def refunded() -> bool:
        answer = await client.payments.GetPayment(
            payments_pb.GetPaymentRequest(order_id=forgotten.order_id), metadata=customer
        )
        return answer.payment.status == payments_pb.PAYMENT_STATUS_REFUNDED

    await eventually(refunded, timeout=30, what="the refund of the order not shipped")

    await eventually(
        lambda: page_gone(cms, artisan_id), timeout=30, what="the public page gone with the account"
    )


async def test_declined_and_cancelled_orders_are_compensated(
    deployment: tuple[Supervisor, Client, str], urls: ServerUrls
) -> None:
    _, client, prefix = deployment
    product_id, _ = await shop_with(client, stock=5)
    _, customer = await client.sign_up(f"rosa-{uuid.uuid4().hex[:6]}@jaen.es", identity_pb.ROLE_CUSTOMER)

    async def points(expected: int) -> bool:
        balance = await client.loyalty.GetBalance(loyalty_pb.GetBalanceRequest(), metadata=customer)
        return balance.points == expected

    await eventually(lambda: points(50), timeout=30, what="the welcome bonus")
    # Both orders spend points (decision 54): each gets them back once it is undone.
    bad_card = await card(client, customer, "4000000000000002")
    declined = await order(client, customer, product_id, 1, bad_card, redeem_points=20)
    await settled(client, customer, declined.order_id, orders_pb.ORDER_STATUS_CANCELLED)

    confirmed = await order(client, customer, product_id, 2, await card(client, customer), redeem_points=30)
    await settled(client, customer, confirmed.order_id, orders_pb.ORDER_STATUS_CONFIRMED)
    assert confirmed.total.amount_cents == 2 * 2500 + confirmed.delivery_fee.amount_cents - 150
    await client.orders.CancelOrder(
        orders_pb.CancelOrderRequest(order_id=confirmed.order_id), metadata=customer
    )

    async def compensated() -> bool:
        payment = await client.payments.GetPayment(
            payments_pb.GetPaymentRequest(order_id=confirmed.order_id), metadata=customer
        )
        stock = (await client.inventory.GetStock(inventory_pb.GetStockRequest(product_id=product_id))).stock
        balance = await client.loyalty.GetBalance(loyalty_pb.GetBalanceRequest(), metadata=customer)
        return (
            payment.payment.status == payments_pb.PAYMENT_STATUS_REFUNDED
            and stock.reserved == 0
            and balance.points == 50
        )

    await eventually(compensated, timeout=30, what="refund, release, points given back and revoked")
    await sound(urls, prefix)


async def test_two_hundred_concurrent_orders_for_five_units(
    deployment: tuple[Supervisor, Client, str], urls: ServerUrls
) -> None:
    _, client, prefix = deployment
    product_id, _ = await shop_with(client, stock=5)
    _, customer = await client.sign_up(f"luis-{uuid.uuid4().hex[:6]}@jaen.es", identity_pb.ROLE_CUSTOMER)
    method = await card(client, customer)

    async def attempt() -> str | grpc.StatusCode:
        try:
            return (await order(client, customer, product_id, 1, method)).order_id
        except grpc.aio.AioRpcError as error:
            return error.code()

    outcomes = await asyncio.gather(*(attempt() for _ in range(200)))
    placed = [o for o in outcomes if isinstance(o, str)]
    # Refusals are "sold out" at the check, or "try later" when the burst overloads a peer (its
    # deadline passed, its breaker opened, or it shed the call): answers a client can act on, never
    # a wrong state.
    refused = {o for o in outcomes if not isinstance(o, str)}
    try_later = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert refused <= {grpc.StatusCode.FAILED_PRECONDITION, *try_later}
    assert len(placed) >= 5

    async def settled_all() -> bool:
        statuses = await asyncio.gather(
            *(
                client.orders.GetOrder(orders_pb.GetOrderRequest(order_id=o), metadata=customer)
                for o in placed
            )
        )
        done = [s.order.status for s in statuses]
        return all(s in (orders_pb.ORDER_STATUS_CONFIRMED, orders_pb.ORDER_STATUS_CANCELLED) for s in done)

    await eventually(settled_all, timeout=120, what="every order settled")
    statuses = await asyncio.gather(
        *(client.orders.GetOrder(orders_pb.GetOrderRequest(order_id=o), metadata=customer) for o in placed)
    )
    assert sum(s.order.status == orders_pb.ORDER_STATUS_CONFIRMED for s in statuses) == 5
    await sound(urls, prefix)
    # Every charge of a cancelled order was refunded, and its points revoked with it.
    points_per_order = statuses[0].order.total.amount_cents // 100

    async def points_settled() -> bool:
        balance = await client.loyalty.GetBalance(loyalty_pb.GetBalanceRequest(), metadata=customer)
        return balance.points == 50 + 5 * points_per_order

    await eventually(points_settled, timeout=60, what="points of the five confirmed orders only")


async def test_a_killed_service_is_restarted_and_its_consumers_resume(
    deployment: tuple[Supervisor, Client, str], urls: ServerUrls
) -> None:
    supervisor, client, prefix = deployment
    product_id, _ = await shop_with(client, stock=5)
    _, customer = await client.sign_up(f"eva-{uuid.uuid4().hex[:6]}@jaen.es", identity_pb.ROLE_CUSTOMER)
    method = await card(client, customer)
    pid = supervisor.pid("inventory")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await eventually(
        lambda: supervisor.pid("inventory") not in (None, pid), timeout=30, what="inventory restarted"
    )
    await supervisor.wait_ready("inventory")
    placed = await order(client, customer, product_id, 1, method)
    await settled(client, customer, placed.order_id, orders_pb.ORDER_STATUS_CONFIRMED, timeout=60)
    await sound(urls, prefix)


# Answers after which a client asks again, with the same request id.
TRY_LATER = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


async def test_orders_placed_while_the_saga_services_are_killed_settle_soundly(
    deployment: tuple[Supervisor, Client, str], urls: ServerUrls, permissioned_nats: PermissionedNats
) -> None:
    """Chaos: orders, payments and inventory each killed (SIGKILL) in turn while a stream of orders
    is in flight, so that each dies holding committed events, fetched deliveries and calls. A
    client asks again with the same request id while told to try later; every order it was told
    about ends CONFIRMED or CANCELLED, each request id made one order, nothing is dead-lettered,
    and the invariants hold."""
    supervisor, client, prefix = deployment
    product_id, _ = await shop_with(client, stock=200)
    _, customer = await client.sign_up(f"rocio-{uuid.uuid4().hex[:6]}@jaen.es", identity_pb.ROLE_CUSTOMER)
    method = await card(client, customer)
    placed: dict[str, str] = {}  # request id -> order id
    asking_again = Backoff(first_s=0.2, cap_s=2.0)

    async def place(request_id: str) -> None:
        request = orders_pb.CreateOrderRequest(
            request_id=request_id,
            lines=[orders_pb.OrderLineRequest(product_id=product_id, quantity=1)],
            payment_method_id=method,
            delivery_address=address_pb2.Address(street="Calle Real 1", locality="Baeza"),
            delivery_location=lat_lng_pb2.LatLng(latitude=37.9938, longitude=-3.47),
        )
        for attempt in range(1, 60):
            try:
                answer = await client.orders.CreateOrder(request, metadata=customer, timeout=5)
            except grpc.aio.AioRpcError as error:
                if error.code() not in TRY_LATER:
                    raise AssertionError(f"{error.code()}: {error.details()}") from None
                await asyncio.sleep(asking_again.delay(attempt))  # a client's retry policy
                continue
            placed[request_id] = answer.order.order_id
            return
        raise AssertionError(f"request {request_id} never answered")

    async def stream(request_ids: list[str]) -> None:
        for request_id in request_ids:
            await place(request_id)

    async def kill(name: str, after: int) -> None:
        await eventually(lambda: len(placed) >= after, timeout=120, what=f"{after} orders placed")
        pid = supervisor.pid(name)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await eventually(
            lambda: supervisor.pid(name) not in (None, pid), timeout=30, what=f"{name} restarted"
        )
        await supervisor.wait_ready(name)

    request_ids = [str(uuid.uuid4()) for _ in range(48)]
    streams = [asyncio.create_task(stream(request_ids[i::4])) for i in range(4)]
    for name, after in (("orders", 8), ("payments", 20), ("inventory", 32)):
        await kill(name, after)
    await asyncio.gather(*streams)

    assert len(set(placed.values())) == len(request_ids), "one order per request id"

    async def settled_all() -> bool:
        answers = await asyncio.gather(
            *(
                client.orders.GetOrder(orders_pb.GetOrderRequest(order_id=o), metadata=customer)
                for o in placed.values()
            )
        )
        terminal = (orders_pb.ORDER_STATUS_CONFIRMED, orders_pb.ORDER_STATUS_CANCELLED)
        return all(a.order.status in terminal for a in answers)

    await eventually(settled_all, timeout=180, what="every order settled")
    await sound(urls, prefix)
    nc = await nats.connect(permissioned_nats.url_of(COMMAND))
    try:
        dead = await nc.jetstream().stream_info(Topology(prefix).stream(DLQ_STREAM))
    finally:
        await nc.close()
    assert dead.state.messages == 0
