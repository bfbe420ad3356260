"""What each event says, in Spanish, and to whom: one function per event type, as data.

Pure functions from an event to the messages it causes; events that concern nobody in person
(stock bookkeeping) have no entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from typing import Any
from zoneinfo import ZoneInfo

from google.protobuf.message import Message

from a4co.artisans.events.v1 import artisan_events_pb2 as artisans
from a4co.identity.events.v1 import identity_events_pb2 as identity
from a4co.inventory.events.v1 import inventory_events_pb2 as inventory
from a4co.orders.events.v1 import order_events_pb2 as orders
from a4co.payments.events.v1 import payment_events_pb2 as payments

MADRID = ZoneInfo("Europe/Madrid")  # the marketplace's clock, for the times a message names


@dataclass(frozen=True, slots=True)
class Note:
    """One message to one person: `body` is listed, pushed and mailed, unless `mailed` is given,
    which is mailed in its place and never listed nor pushed (a secret, such as a reset code)."""

    recipient_id: str
    title: str
    body: str
    subject_id: str
    mailed: str | None = None


def euros(cents: int) -> str:
    """An amount as Spaniards write it: 24,50 €."""
    return f"{cents / 100:,.2f} €".replace(",", "X").replace(".", ",").replace("X", ".")


def _short(order_id: str) -> str:
    return order_id[:8]


def user_registered(e: Any) -> list[Note]:
    return [
        Note(
            e.user_id,
            "¡Bienvenido a a4co!",
            f"Hola {e.display_name}, gracias por unirte al mercado de los artesanos de Jaén.",
            e.user_id,
        )
    ]


def profile_updated(e: Any) -> list[Note]:
    return [Note(e.user_id, "Perfil actualizado", "Hemos guardado los cambios de tu perfil.", e.user_id)]


def password_changed(e: Any) -> list[Note]:
    if e.reset:
        closed = (
            f" Hemos cerrado todas tus sesiones abiertas ({e.ended_sessions})." if e.ended_sessions else ""
        )
        text = (
            f"Has restablecido la contraseña de tu cuenta con el código que te enviamos por correo.{closed}"
            " Si no has sido tú, escríbenos cuanto antes."
        )
        return [Note(e.user_id, "Contraseña restablecida", text, e.user_id)]
    others = f" Hemos cerrado tus otras sesiones abiertas ({e.ended_sessions})." if e.ended_sessions else ""
    text = f"La contraseña de tu cuenta ha cambiado.{others} Si no has sido tú, escríbenos cuanto antes."
    return [Note(e.user_id, "Contraseña cambiada", text, e.user_id)]


def password_reset_requested(e: Any) -> list[Note]:
    """The code goes by e-mail only: whoever holds a session of the account (listed and pushed
    messages) must not be able to reset its password without the mailbox."""
    until = e.expire_time.ToDatetime(tzinfo=UTC).astimezone(MADRID).strftime("%H:%M")
    listed = (
        "Se ha pedido restablecer la contraseña de tu cuenta y te hemos enviado un código por correo,"
        f" válido hasta las {until} (hora de Madrid). Si no lo has pedido tú, no hagas nada:"
        " tu contraseña no cambia."
    )
    mailed = (
        f"Hola {e.display_name}: tu código para restablecer la contraseña de a4co es {e.code}."
        f" Sirve una sola vez, hasta las {until} (hora de Madrid). Si no lo has pedido tú, ignora"
        " este mensaje: tu contraseña no cambia."
    )
    return [Note(e.user_id, "Restablecer tu contraseña", listed, e.user_id, mailed)]


def artisan_onboarded(e: Any) -> list[Note]:
    return [
        Note(
            e.artisan_id,
            "Tu taller ya está en a4co",
            f"{e.display_name} ({e.locality}) ya es visible para los clientes.",
            e.artisan_id,
        )
    ]


def artisan_updated(e: Any) -> list[Note]:
    moved = (
        " En unos momentos los clientes lo verán en su nueva ubicación."
        if "location" in e.changed_fields
        else ""
    )
    return [
        Note(
            e.artisan_id,
            "Taller actualizado",
            f"Hemos guardado los cambios de {e.display_name}.{moved}",
            e.artisan_id,
        )
    ]


def product_published(e: Any) -> list[Note]:
    return [Note(e.artisan_id, "Producto publicado", f"«{e.name}» ya está a la venta.", e.product_id)]


def product_withdrawn(e: Any) -> list[Note]:
    if e.with_workshop:  # one note for the workshop says it (artisan_offboarded)
        return []
    return [Note(e.artisan_id, "Producto retirado", f"«{e.name}» ya no está a la venta.", e.product_id)]


def artisan_offboarded(e: Any) -> list[Note]:
    withdrawn = {0: "", 1: " Hemos retirado de la venta tu producto."}.get(
        e.withdrawn_products, f" Hemos retirado de la venta tus {e.withdrawn_products} productos."
    )
    return [
        Note(
            e.artisan_id,
            "Tu taller ha dejado a4co",
            f"{e.display_name} ya no aparece en el mapa ni en las búsquedas.{withdrawn}"
            " Los pedidos que ya tenías siguen en curso: envíalos y entrégalos como siempre.",
            e.artisan_id,
        )
    ]


def order_created(e: Any) -> list[Note]:
    """The customer is told what they will be charged, and what their points take off it; the
    artisan what the order is worth, the same with points or without (the marketplace pays
    them: decision 54)."""
    points = (
        f" ({e.points_redeemed} puntos te descuentan {euros(e.discount.amount_cents)})"
        if e.points_redeemed
        else ""
    )
    return [
        Note(
            e.customer_id,
            "Hemos recibido tu pedido",
            f"Tu pedido {_short(e.order_id)} de {euros(e.total.amount_cents)}{points} está en camino"
            " de confirmarse.",
            e.order_id,
        ),
        Note(
            e.artisan_id,
            "Nuevo pedido",
            f"Has recibido el pedido {_short(e.order_id)} por"
            f" {euros(e.total.amount_cents + e.discount.amount_cents)}.",
            e.order_id,
        ),
    ]


STATUS_TEXT = {
    orders.ORDER_STATUS_CONFIRMED: ("Pedido confirmado", "El artesano ya está preparando tu pedido {id}."),
    orders.ORDER_STATUS_SHIPPED: ("Pedido enviado", "Tu pedido {id} ya va de camino."),
    orders.ORDER_STATUS_CANCELLED: ("Pedido cancelado", "Tu pedido {id} se ha cancelado: {why}."),
    orders.ORDER_STATUS_RETURN_REQUESTED: (
        "Devolución solicitada",
        "Has pedido devolver el pedido {id}: envíalo de vuelta al artesano, y te devolveremos lo que"
        " pagaste en cuanto le llegue.",
    ),
    orders.ORDER_STATUS_RETURNED: (
        "Devolución recibida",
        "El artesano ha recibido la devolución del pedido {id}.",
    ),
}
# Why an order was cancelled (the codes of its cancel_reason, orders_service.proto), as its
# customer and its artisan are told.
WHY_CANCELLED = {
    "CARD_DECLINED": ("el banco rechazó la tarjeta", "el banco rechazó la tarjeta del cliente"),
    "INSUFFICIENT_FUNDS": ("la tarjeta no tenía saldo suficiente", "la tarjeta del cliente no tenía saldo"),
    "PAYMENT_FAILED": ("el pago no se completó", "el pago del cliente no se completó"),
    "PROVIDER_TIMEOUT": ("el pago no se completó a tiempo", "el pago no se completó a tiempo"),
    "PAYMENT_TIMEOUT": ("el pago no se completó a tiempo", "el pago no se completó a tiempo"),
    "UNKNOWN_PAYMENT_METHOD": (
        "el método de pago no es válido",
        "el método de pago del cliente no es válido",
    ),
    "OUT_OF_STOCK": ("no quedaban existencias suficientes", "no quedaban existencias suficientes"),
    "UNKNOWN_PRODUCT": (
        "uno de los productos ya no está a la venta",
        "uno de los productos ya no está a la venta",
    ),
    "RESERVATION_TIMEOUT": (
        "las existencias no se reservaron a tiempo",
        "las existencias no se reservaron a tiempo",
    ),
    "INSUFFICIENT_POINTS": (
        "no tenías tantos puntos como querías canjear",
        "el cliente no tenía tantos puntos como quería canjear",
    ),
    "REDEMPTION_TIMEOUT": (
        "los puntos no se canjearon a tiempo",
        "los puntos del cliente no se canjearon a tiempo",
    ),
    "CUSTOMER_CANCELLED": ("lo cancelaste tú", "el cliente lo canceló"),
    "ADMIN_CANCELLED": ("lo canceló el equipo de a4co", "lo canceló el equipo de a4co"),
    "ARTISAN_LEFT": ("el artesano ha dejado a4co", "cerraste tu cuenta antes de enviarlo"),
}


def why_cancelled(e: Any, artisan: bool) -> str:
    """Why an order was cancelled, for its customer or its artisan, with the note of whoever
    cancelled it where the reader did not write it."""
    code = e.reason
    why = WHY_CANCELLED[code][artisan] if code in WHY_CANCELLED else f"motivo {code or 'no indicado'}"
    wrote = (code == "CUSTOMER_CANCELLED" and not artisan) or not e.cancel_note
    return why if wrote else f"{why} («{e.cancel_note}»)"


def points_back(e: Any) -> bool:
    """Whether the points an order spent go back to its customer's balance: it was cancelled or
    returned, and not because they were missing."""
    undone = e.status in (orders.ORDER_STATUS_CANCELLED, orders.ORDER_STATUS_RETURNED)
    return bool(undone and e.points_redeemed > 0 and e.reason != "INSUFFICIENT_POINTS")


def return_taken_back(e: Any) -> bool:
    """A return asked for, taken back before its goods came back: the order is delivered again."""
    change = (e.previous_status, e.status)
    return bool(change == (orders.ORDER_STATUS_RETURN_REQUESTED, orders.ORDER_STATUS_DELIVERED))


def status_notified(e: Any) -> bool:
    """Whether an order's status change is one the customer hears of (confirmed, shipped,
    cancelled, a return asked for, taken back or received); the others (pending, paid, a repeat)
    make no message."""
    return (e.status in STATUS_TEXT and e.previous_status != e.status) or return_taken_back(e)


def order_status_changed(e: Any) -> list[Note]:
    if not status_notified(e):
        return []
    if return_taken_back(e):
        short = _short(e.order_id)
        return [
            Note(
                e.customer_id,
                "Devolución anulada",
                f"Has anulado la devolución del pedido {short}.",
                e.order_id,
            ),
            Note(
                e.artisan_id,
                "Devolución anulada",
                f"El cliente ya no devuelve el pedido {short}: la venta sigue en pie.",
                e.order_id,
            ),
        ]
    title, text = STATUS_TEXT[e.status]
    cancelled = e.status == orders.ORDER_STATUS_CANCELLED
    body = text.format(id=_short(e.order_id), why=why_cancelled(e, artisan=False) if cancelled else "")
    if e.refund_required:
        body += " Te devolvemos lo que pagaste."
    if points_back(e):
        body += f" Tus {e.points_redeemed} puntos vuelven a tu saldo."
    elif e.status == orders.ORDER_STATUS_CONFIRMED and e.points_redeemed:
        body += f" Has canjeado {e.points_redeemed} puntos de tu saldo."
    found = [Note(e.customer_id, title, body, e.order_id)]
    if e.status == orders.ORDER_STATUS_CONFIRMED:
        found.append(
            Note(
                e.artisan_id,
                "Prepara el pedido",
                f"El pedido {_short(e.order_id)} está pagado y reservado.",
                e.order_id,
            )
        )
    elif cancelled:
        found.append(
            Note(
                e.artisan_id,
                "Pedido cancelado",
                f"El pedido {_short(e.order_id)} se ha cancelado: {why_cancelled(e, artisan=True)}.",
                e.order_id,
            )
        )
    elif e.status == orders.ORDER_STATUS_RETURN_REQUESTED:
        said = f" El cliente dice: «{e.return_note}»." if e.return_note else ""
        found.append(
            Note(
                e.artisan_id,
                "Devolución solicitada",
                f"El cliente quiere devolver el pedido {_short(e.order_id)}.{said} Cuando te llegue,"
                " márcalo como devuelto y le reembolsaremos.",
                e.order_id,
            )
        )
    return found


def order_delivered(e: Any) -> list[Note]:
    return [
        Note(
            e.customer_id,
            "Pedido entregado",
            f"Tu pedido {_short(e.order_id)} ha llegado. ¡Que lo disfrutes!",
            e.order_id,
        ),
        Note(
            e.artisan_id, "Venta completada", f"El pedido {_short(e.order_id)} se ha entregado.", e.order_id
        ),
    ]


def payment_processed(e: Any) -> list[Note]:
    return [
        Note(
            e.customer_id,
            "Pago recibido",
            f"Hemos cobrado {euros(e.amount.amount_cents)} por tu pedido {_short(e.order_id)}.",
            e.order_id,
        )
    ]


def payment_failed(e: Any) -> list[Note]:
    return [
        Note(
            e.customer_id,
            "No hemos podido cobrar tu pedido",
            f"El pago del pedido {_short(e.order_id)} no se completó: {e.message}",
            e.order_id,
        )
    ]


def refund_issued(e: Any) -> list[Note]:
    return [
        Note(
            e.customer_id,
            "Reembolso emitido",
            f"Te hemos devuelto {euros(e.amount.amount_cents)} del pedido {_short(e.order_id)}.",
            e.order_id,
        )
    ]


def low_stock(e: Any) -> list[Note]:
    return [
        Note(
            e.artisan_id,
            "Quedan pocas unidades",
            f"Solo quedan {e.available} unidades de un producto (aviso a partir de {e.threshold}).",
            e.product_id,
        )
    ]


MESSAGES: dict[type[Message], Callable[[Any], list[Note]]] = {
    identity.UserRegistered: user_registered,
    identity.ProfileUpdated: profile_updated,
    identity.PasswordChanged: password_changed,
    identity.PasswordResetRequested: password_reset_requested,
    artisans.ArtisanOnboarded: artisan_onboarded,
    artisans.ArtisanUpdated: artisan_updated,
    artisans.ArtisanOffboarded: artisan_offboarded,
    artisans.ProductPublished: product_published,
    artisans.ProductWithdrawn: product_withdrawn,
    orders.OrderCreated: order_created,
    orders.OrderStatusChanged: order_status_changed,
    orders.OrderDelivered: order_delivered,
    payments.PaymentProcessed: payment_processed,
    payments.PaymentFailed: payment_failed,
    payments.RefundIssued: refund_issued,
    inventory.LowStockWarning: low_stock,
}
