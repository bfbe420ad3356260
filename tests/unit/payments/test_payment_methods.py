"""Card, IBAN and Bizum checks."""

from __future__ import annotations

from datetime import date

import pytest

from services.payments.domain import Brand, card_brand, check_bizum, check_card, check_iban, luhn_ok

TODAY = date(2026, 11, 28)


@pytest.mark.parametrize(
    ("number", "brand"),
    [
        ("4242424242424242", Brand.VISA),
        ("5555555555554444", Brand.MASTERCARD),
        ("2223003122003222", Brand.MASTERCARD),
        ("378282246310005", Brand.AMEX),
        ("6011111111111117", Brand.DISCOVER),
        ("3056930009020004", Brand.DINERS),
        ("3530111333300000", Brand.JCB),
        ("6200000000000005", Brand.UNIONPAY),
        ("6759649826438453", Brand.MAESTRO),
        ("9999999999999995", Brand.UNKNOWN),
    ],
)
def test_brand_from_the_iin(number: str, brand: Brand) -> None:
    assert card_brand(number) is brand


def test_luhn() -> None:
    assert luhn_ok("4242424242424242")
    assert not luhn_ok("4242424242424241")


def test_a_valid_card_keeps_only_its_last_four_digits() -> None:
    verdict = check_card("4242 4242 4242 4242", 12, 2030, "123", TODAY)
    assert verdict.valid
    assert verdict.last_four == "4242"
    assert "4242424242424242" not in repr(verdict)


@pytest.mark.parametrize(
    ("number", "month", "year", "cvc", "reasons"),
    [
        ("4242424242424241", 12, 2030, "123", {"LUHN_CHECK_FAILED"}),
        ("4242", 12, 2030, "123", {"INVALID_CARD_NUMBER"}),
        ("4242424242424242", 10, 2026, "123", {"CARD_EXPIRED"}),
        ("4242424242424242", 13, 2030, "123", {"INVALID_EXPIRY"}),
        ("378282246310005", 12, 2030, "123", {"INVALID_CVC"}),
        ("4242424242424241", 1, 2020, "1", {"LUHN_CHECK_FAILED", "CARD_EXPIRED", "INVALID_CVC"}),
    ],
)
def test_invalid_cards_say_why(number: str, month: int, year: int, cvc: str, reasons: set[str]) -> None:
    verdict = check_card(number, month, year, cvc, TODAY)
    assert not verdict.valid
    assert {p.reason for p in verdict.problems} == reasons


def test_a_card_valid_until_the_end_of_this_month() -> None:
    assert check_card("4242424242424242", 11, 2026, "123", TODAY).valid


@pytest.mark.parametrize(
    "iban",
    [
        "ES91 2100 0418 4502 0005 1332",
        "es7921000813610123456789",
        "DE89370400440532013000",
        "FR1420041010050500013M02606",
    ],
)
def test_valid_ibans(iban: str) -> None:
    assert check_iban(iban).valid


@pytest.mark.parametrize(
    ("iban", "reason"),
    [
        ("ES9121000418450200051333", "IBAN_CHECKSUM_FAILED"),
        ("ES91210004184502000513", "INVALID_IBAN_FORMAT"),
        ("US64SVBKUS6S3300958879", "UNSUPPORTED_COUNTRY"),
        # mod-97 holds, but the Spanish control digits (DC) of the account do not.
        ("ES0421000418411234567891", "IBAN_CHECKSUM_FAILED"),
    ],
)
def test_invalid_ibans(iban: str, reason: str) -> None:
    verdict = check_iban(iban)
    assert [p.reason for p in verdict.problems] == [reason]


@pytest.mark.parametrize("phone", ["612345678", "+34 712 345 678", "0034612345678", "34-612-345-678"])
def test_bizum_takes_spanish_mobiles(phone: str) -> None:
    assert check_bizum(phone).valid


@pytest.mark.parametrize("phone", ["912345678", "61234567", "+33612345678", "abc"])
def test_bizum_refuses_other_numbers(phone: str) -> None:
    assert not check_bizum(phone).valid
