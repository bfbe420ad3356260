"""Payment methods and their checks: cards (Luhn, expiry, brand), SEPA IBANs (mod-97), Bizum.

Pure Python, no I/O. A full card number never leaves this module except towards the provider:
what is kept is the provider's token and the last four digits.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import date


class MethodType(enum.StrEnum):
    """The kind of a payment method."""

    CARD = "card"
    SEPA_DEBIT = "sepa_debit"
    BIZUM = "bizum"


class Brand(enum.StrEnum):
    """Card networks, told by the first digits (IIN) of the number."""

    UNKNOWN = "unknown"
    VISA = "visa"
    MASTERCARD = "mastercard"
    AMEX = "amex"
    DISCOVER = "discover"
    DINERS = "diners"
    JCB = "jcb"
    UNIONPAY = "unionpay"
    MAESTRO = "maestro"


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a payment method is not valid."""

    field: str
    reason: str
    description: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of checking a payment method."""

    method_type: MethodType
    last_four: str
    brand: Brand = Brand.UNKNOWN
    problems: list[Problem] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        """Whether nothing is wrong."""
        return not self.problems


# (prefix range low, high, brand), checked longest prefix first.
_IIN_RANGES: list[tuple[str, str, Brand]] = [
    ("2221", "2720", Brand.MASTERCARD),
    ("3528", "3589", Brand.JCB),
    ("6304", "6304", Brand.MAESTRO),
    ("6759", "6759", Brand.MAESTRO),
    ("6761", "6763", Brand.MAESTRO),
    ("6011", "6011", Brand.DISCOVER),
    ("644", "649", Brand.DISCOVER),
    ("300", "305", Brand.DINERS),
    ("34", "34", Brand.AMEX),
    ("37", "37", Brand.AMEX),
    ("36", "36", Brand.DINERS),
    ("38", "39", Brand.DINERS),
    ("51", "55", Brand.MASTERCARD),
    ("65", "65", Brand.DISCOVER),
    ("62", "62", Brand.UNIONPAY),
    ("50", "50", Brand.MAESTRO),
    ("56", "58", Brand.MAESTRO),
    ("4", "4", Brand.VISA),
]


def digits_only(value: str) -> str:
    """A number as typed, without spaces and dashes."""
    return re.sub(r"[\s\-]", "", value)


def luhn_ok(number: str) -> bool:
    """The Luhn (mod 10) check of a card number."""
    total = 0
    for i, char in enumerate(reversed(number)):
        d = int(char)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_brand(number: str) -> Brand:
    """The network of a card number, from its first digits."""
    for low, high, brand in _IIN_RANGES:
        head = number[: len(low)]
        if len(head) == len(low) and low <= head <= high:
            return brand
    return Brand.UNKNOWN


def check_card(number: str, exp_month: int, exp_year: int, cvc: str, today: date) -> Verdict:
    """Check a card as typed; the verdict keeps only the last four digits."""
    pan = digits_only(number)
    problems: list[Problem] = []
    if not pan.isdigit() or not 12 <= len(pan) <= 19:
        problems.append(Problem("card.number", "INVALID_CARD_NUMBER", "must be 12 to 19 digits"))
    elif not luhn_ok(pan):
        problems.append(Problem("card.number", "LUHN_CHECK_FAILED", "the card number is mistyped"))
    brand = card_brand(pan) if pan.isdigit() else Brand.UNKNOWN
    if not 1 <= exp_month <= 12:
        problems.append(Problem("card.exp_month", "INVALID_EXPIRY", "must be 1 to 12"))
    elif not 2000 <= exp_year <= 2100:
        problems.append(Problem("card.exp_year", "INVALID_EXPIRY", "must be a four-digit year"))
    elif (exp_year, exp_month) < (today.year, today.month):
        problems.append(Problem("card.exp_year", "CARD_EXPIRED", f"expired {exp_month:02d}/{exp_year}"))
    cvc_length = 4 if brand is Brand.AMEX else 3
    if not (cvc.isdigit() and len(cvc) == cvc_length):
        problems.append(Problem("card.cvc", "INVALID_CVC", f"must be {cvc_length} digits"))
    return Verdict(MethodType.CARD, pan[-4:] if pan.isdigit() else "", brand, problems)


# IBAN lengths of the SEPA countries (ISO 13616 registry).
IBAN_LENGTHS = {
    "ES": 24, "AD": 24, "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22,
    "DK": 18, "EE": 20, "FI": 18, "FR": 27, "GB": 22, "GI": 23, "GR": 27, "HR": 21, "HU": 28,
    "IE": 22, "IS": 26, "IT": 27, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MT": 31,
    "NL": 18, "NO": 15, "PL": 28, "PT": 25, "RO": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27,
    "VA": 22,
}  # fmt: skip


def iban_mod97_ok(iban: str) -> bool:
    """The ISO 7064 mod-97 check: the rearranged IBAN as a number leaves remainder 1."""
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def spanish_control_digits_ok(bban: str) -> bool:
    """The two control digits (DC) of a Spanish account number (CCC: bank, branch, DC, account)."""
    weights = [1, 2, 4, 8, 5, 10, 9, 7, 3, 6]

    def digit(numbers: str) -> int:
        value = 11 - sum(int(n) * w for n, w in zip(numbers.rjust(10, "0"), weights, strict=True)) % 11
        return {10: 1, 11: 0}.get(value, value)

    bank_branch, dc, account = bban[:8], bban[8:10], bban[10:]
    return f"{digit(bank_branch)}{digit(account)}" == dc


def check_iban(value: str) -> Verdict:
    """Check a SEPA IBAN: country, length, characters, mod-97, and for Spain the CCC digits."""
    iban = re.sub(r"\s", "", value).upper()
    problems: list[Problem] = []
    country = iban[:2]
    if country not in IBAN_LENGTHS:
        problems.append(
            Problem("sepa_debit.iban", "UNSUPPORTED_COUNTRY", f"{country!r} is not a SEPA country")
        )
    elif len(iban) != IBAN_LENGTHS[country] or not iban.isalnum() or not iban[2:4].isdigit():
        problems.append(
            Problem(
                "sepa_debit.iban",
                "INVALID_IBAN_FORMAT",
                f"a {country} IBAN has {IBAN_LENGTHS[country]} characters",
            )
        )
    elif not iban_mod97_ok(iban):
        problems.append(Problem("sepa_debit.iban", "IBAN_CHECKSUM_FAILED", "the IBAN is mistyped"))
    elif country == "ES" and not (iban[4:].isdigit() and spanish_control_digits_ok(iban[4:])):
        problems.append(
            Problem("sepa_debit.iban", "IBAN_CHECKSUM_FAILED", "the account's control digits are wrong")
        )
    return Verdict(MethodType.SEPA_DEBIT, iban[-4:], problems=problems)


def normalise_spanish_mobile(value: str) -> str:
    """A Spanish number without spaces or the +34 / 0034 prefix."""
    number = digits_only(value).removeprefix("+")
    for prefix in ("0034", "34"):
        if len(number) == 9 + len(prefix) and number.startswith(prefix):
            return number[len(prefix) :]
    return number


def check_bizum(value: str) -> Verdict:
    """Check a Bizum phone number: a Spanish mobile, 9 digits starting with 6 or 7."""
    number = normalise_spanish_mobile(value)
    problems = []
    if not (len(number) == 9 and number.isdigit() and number[0] in "67"):
        problems.append(Problem("bizum.phone_number", "INVALID_PHONE", "must be a Spanish mobile number"))
    return Verdict(MethodType.BIZUM, number[-4:], problems=problems)
