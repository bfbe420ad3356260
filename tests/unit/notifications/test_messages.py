"""Which order status changes make a message: the subscription's filter and the messages agree."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any, TypeAlias

import pytest

from a4co.orders.events.v1 import order_events_pb2 as orders
from a4co.type.v1 import money_pb2
from services.notifications.messages import (
    WHY_CANCELLED,
    order_created,
    order_status_changed,
    status_notified,
)
from services.orders.domain import CANCEL_REASONS

Status: TypeAlias = orders.OrderStatus.ValueType
STATUSES: list[Status] = list(orders.OrderStatus.values())


def changed(previous: Status, status: Status) -> orders.OrderStatusChanged:
    return orders.OrderStatusChanged(
        order_id="o-1", customer_id="c-1", artisan_id="a-1", previous_status=previous, status=status
    )


@pytest.mark.parametrize(("previous", "status"), list(itertools.product(STATUSES, STATUSES)))
def test_a_status_change_is_filtered_in_exactly_when_it_makes_a_message(
    previous: Status, status: Status
) -> None:
    event = changed(previous, status)
    assert status_notified(event) == bool(order_status_changed(event))


def test_the_customer_hears_of_confirmation_and_cancellation_not_payment() -> None:
    pending = orders.ORDER_STATUS_PENDING
    assert status_notified(changed(pending, orders.ORDER_STATUS_CONFIRMED))
    assert status_notified(changed(pending, orders.ORDER_STATUS_CANCELLED))
    assert not status_notified(changed(pending, orders.ORDER_STATUS_PAID))
    assert not status_notified(changed(orders.ORDER_STATUS_CONFIRMED, orders.ORDER_STATUS_CONFIRMED))


def told(previous: Status, status: Status, **fields: Any) -> list[tuple[str, str]]:
    """Who is told what of a change of order 0f1e2d3c's status."""
    event = orders.OrderStatusChanged(
        order_id="0f1e2d3c-aaaa",
        customer_id="c-1",
        artisan_id="a-1",
        previous_status=previous,
        status=status,
        **fields,
    )
    return [(n.recipient_id, n.body) for n in order_status_changed(event)]


def cancelled(reason: str, note: str = "", refund: bool = False) -> list[tuple[str, str]]:
    return told(
        orders.ORDER_STATUS_CONFIRMED,
        orders.ORDER_STATUS_CANCELLED,
        reason=reason,
        cancel_note=note,
        refund_required=refund,
    )


def test_a_cancellation_says_why_in_words_and_the_note_to_whoever_did_not_write_it() -> None:
    assert cancelled("CUSTOMER_CANCELLED", "ya no lo necesito", refund=True) == [
        ("c-1", "Tu pedido 0f1e2d3c se ha cancelado: lo cancelaste tú. Te devolvemos lo que pagaste."),
        ("a-1", "El pedido 0f1e2d3c se ha cancelado: el cliente lo canceló («ya no lo necesito»)."),
    ]
    assert cancelled("ADMIN_CANCELLED", "fuera de zona") == [
        ("c-1", "Tu pedido 0f1e2d3c se ha cancelado: lo canceló el equipo de a4co («fuera de zona»)."),
        ("a-1", "El pedido 0f1e2d3c se ha cancelado: lo canceló el equipo de a4co («fuera de zona»)."),
    ]
    assert cancelled("CARD_DECLINED") == [
        ("c-1", "Tu pedido 0f1e2d3c se ha cancelado: el banco rechazó la tarjeta."),
        ("a-1", "El pedido 0f1e2d3c se ha cancelado: el banco rechazó la tarjeta del cliente."),
    ]


def test_a_return_is_told_to_the_artisan_with_the_customers_words_and_its_refund_to_the_customer() -> None:
    delivered, asked_for = orders.ORDER_STATUS_DELIVERED, orders.ORDER_STATUS_RETURN_REQUESTED
    asked = told(delivered, asked_for, return_note="llegó roto")
    assert [who for who, _ in asked] == ["c-1", "a-1"]
    assert "envíalo de vuelta al artesano" in asked[0][1]
    assert "El cliente dice: «llegó roto»." in asked[1][1]
    assert "El cliente dice" not in told(delivered, asked_for)[1][1]
    assert told(asked_for, delivered) == [
        ("c-1", "Has anulado la devolución del pedido 0f1e2d3c."),
        ("a-1", "El cliente ya no devuelve el pedido 0f1e2d3c: la venta sigue en pie."),
    ]
    assert told(asked_for, orders.ORDER_STATUS_RETURNED, return_note="llegó roto", refund_required=True) == [
        ("c-1", "El artesano ha recibido la devolución del pedido 0f1e2d3c. Te devolvemos lo que pagaste.")
    ]


def test_the_customer_is_told_that_the_points_an_undone_order_spent_are_back() -> None:
    confirmed, cancelled_, returned = (
        orders.ORDER_STATUS_CONFIRMED,
        orders.ORDER_STATUS_CANCELLED,
        orders.ORDER_STATUS_RETURNED,
    )
    back = " Tus 40 puntos vuelven a tu saldo."
    by_customer = told(
        confirmed, cancelled_, reason="CUSTOMER_CANCELLED", refund_required=True, points_redeemed=40
    )
    assert by_customer[0][1].endswith("Te devolvemos lo que pagaste." + back)
    assert told(orders.ORDER_STATUS_RETURN_REQUESTED, returned, points_redeemed=40)[0][1].endswith(back)
    # Too few points: none were taken, so none come back.
    refused = told(confirmed, cancelled_, reason="INSUFFICIENT_POINTS", points_redeemed=400)
    assert refused[0][1] == (
        "Tu pedido 0f1e2d3c se ha cancelado: no tenías tantos puntos como querías canjear."
    )
    assert not told(confirmed, cancelled_, reason="CUSTOMER_CANCELLED")[0][1].endswith(back)


def test_the_customer_is_told_what_their_points_take_off_and_that_they_were_spent() -> None:
    def created(total: int, points: int, discount: int) -> list[tuple[str, str]]:
        event = orders.OrderCreated(
            order_id="0f1e2d3c-aaaa",
            customer_id="c-1",
            artisan_id="a-1",
            total=money_pb2.Money(currency_code="EUR", amount_cents=total),
            points_redeemed=points,
            discount=money_pb2.Money(currency_code="EUR", amount_cents=discount),
        )
        return [(n.recipient_id, n.body) for n in order_created(event)]

    # The artisan hears of what the order is worth, whether points pay part of it or not.
    assert created(1_140, 50, 250) == [
        (
            "c-1",
            "Tu pedido 0f1e2d3c de 11,40 € (50 puntos te descuentan 2,50 €) está en camino de confirmarse.",
        ),
        ("a-1", "Has recibido el pedido 0f1e2d3c por 13,90 €."),
    ]
    assert created(1_390, 0, 0) == [
        ("c-1", "Tu pedido 0f1e2d3c de 13,90 € está en camino de confirmarse."),
        ("a-1", "Has recibido el pedido 0f1e2d3c por 13,90 €."),
    ]
    pending, confirmed = orders.ORDER_STATUS_PENDING, orders.ORDER_STATUS_CONFIRMED
    assert told(pending, confirmed, points_redeemed=50)[0] == (
        "c-1",
        "El artesano ya está preparando tu pedido 0f1e2d3c. Has canjeado 50 puntos de tu saldo.",
    )
    assert told(pending, confirmed)[0] == ("c-1", "El artesano ya está preparando tu pedido 0f1e2d3c.")


def test_a_code_without_words_is_told_as_it_is() -> None:
    """A payment provider may refuse with a code this service does not know yet."""
    assert cancelled("FRAUD_SUSPECTED")[0][1] == "Tu pedido 0f1e2d3c se ha cancelado: motivo FRAUD_SUSPECTED."
    assert cancelled("")[0][1] == "Tu pedido 0f1e2d3c se ha cancelado: motivo no indicado."


def test_every_code_the_orders_api_documents_has_words() -> None:
    proto = Path("proto/a4co/orders/v1/orders_service.proto").read_text()
    comment = proto[: proto.index("string cancel_reason = 9;")].rsplit("message Order {", 1)[1]
    documented = set(re.findall(r'"([A-Z_]+)"', comment.split("OrderStatus status = 8;")[1]))
    assert len(documented) >= 11
    assert documented == set(WHY_CANCELLED) == set(CANCEL_REASONS), "orders counts each apart"


def test_a_password_change_tells_its_user_and_how_many_sessions_it_ended() -> None:
    from a4co.identity.events.v1 import identity_events_pb2 as identity
    from services.notifications.messages import MESSAGES

    notes = MESSAGES[identity.PasswordChanged](identity.PasswordChanged(user_id="u-1", ended_sessions=2))
    assert [(n.recipient_id, n.title) for n in notes] == [("u-1", "Contraseña cambiada")]
    assert "otras sesiones abiertas (2)" in notes[0].body
    alone = MESSAGES[identity.PasswordChanged](identity.PasswordChanged(user_id="u-1"))
    assert "sesiones" not in alone[0].body


def test_a_password_reset_tells_its_user_that_every_session_ended() -> None:
    from a4co.identity.events.v1 import identity_events_pb2 as identity
    from services.notifications.messages import MESSAGES

    reset = identity.PasswordChanged(user_id="u-1", ended_sessions=3, reset=True)
    [note] = MESSAGES[identity.PasswordChanged](reset)
    assert (note.recipient_id, note.title) == ("u-1", "Contraseña restablecida")
    assert "todas tus sesiones abiertas (3)" in note.body
    assert note.mailed is None


def test_a_reset_code_is_mailed_and_never_listed_nor_pushed() -> None:
    from datetime import UTC, datetime

    from a4co.identity.events.v1 import identity_events_pb2 as identity
    from services.notifications.messages import MESSAGES
    from services.platform.timestamps import to_timestamp

    winter, summer = datetime(2026, 12, 1, 17, 5, tzinfo=UTC), datetime(2026, 7, 1, 17, 5, tzinfo=UTC)
    for expires, madrid in ((winter, "18:05"), (summer, "19:05")):
        event = identity.PasswordResetRequested(
            user_id="u-1", email="luz@jaen.es", display_name="Luz", code="7KQ2M-9XH4P",
            expire_time=to_timestamp(expires),
        )  # fmt: skip
        [note] = MESSAGES[identity.PasswordResetRequested](event)
        assert (note.recipient_id, note.subject_id) == ("u-1", "u-1")
        assert "7KQ2M" not in note.body, "the listed and pushed text has no code"
        assert note.mailed is not None
        assert "7KQ2M-9XH4P" in note.mailed
        assert f"hasta las {madrid} (hora de Madrid)" in note.mailed
        assert f"hasta las {madrid} (hora de Madrid)" in note.body


def test_a_workshop_change_is_confirmed_to_its_artisan_and_a_move_said() -> None:
    from a4co.artisans.events.v1 import artisan_events_pb2 as artisans
    from services.notifications.messages import MESSAGES

    renamed = artisans.ArtisanUpdated(artisan_id="a-1", display_name="Alfarería Tito", changed_fields=["bio"])
    [note] = MESSAGES[artisans.ArtisanUpdated](renamed)
    assert (note.recipient_id, note.title, note.subject_id) == ("a-1", "Taller actualizado", "a-1")
    assert "Alfarería Tito" in note.body
    assert "ubicación" not in note.body
    moved = artisans.ArtisanUpdated(
        artisan_id="a-1", display_name="Alfarería Tito", changed_fields=["location"]
    )
    assert "nueva ubicación" in MESSAGES[artisans.ArtisanUpdated](moved)[0].body


def test_a_workshop_that_leaves_is_told_once_not_once_per_product() -> None:
    from a4co.artisans.events.v1 import artisan_events_pb2 as artisans
    from services.notifications.messages import MESSAGES

    by_itself = artisans.ProductWithdrawn(product_id="p-1", artisan_id="a-1", name="Fuente")
    assert [n.title for n in MESSAGES[artisans.ProductWithdrawn](by_itself)] == ["Producto retirado"]
    with_workshop = artisans.ProductWithdrawn(
        product_id="p-2", artisan_id="a-1", name="Jarra", with_workshop=True
    )
    assert MESSAGES[artisans.ProductWithdrawn](with_workshop) == []
    bodies = []
    for withdrawn in (0, 1, 12):
        left = artisans.ArtisanOffboarded(
            artisan_id="a-1", display_name="Alfarería Tito", withdrawn_products=withdrawn
        )
        [note] = MESSAGES[artisans.ArtisanOffboarded](left)
        assert (note.recipient_id, note.title, note.subject_id) == ("a-1", "Tu taller ha dejado a4co", "a-1")
        assert "Alfarería Tito" in note.body
        assert "envíalos y entrégalos" in note.body
        bodies.append(note.body)
    assert "retirado" not in bodies[0]
    assert "tu producto" in bodies[1]
    assert "tus 12 productos" in bodies[2]
