"""The codes that reset a forgotten password, and the checks of their requests."""

from __future__ import annotations

import hashlib

import pytest

from services.identity.domain import (
    RESET_CODE_ALPHABET,
    RESET_CODE_LENGTH,
    ResetCode,
    check_reset,
    check_reset_request,
)
from services.platform.errors import InvalidArgumentError


def test_a_new_code_is_ten_characters_of_crockfords_base32_e_mailed_in_two_groups() -> None:
    codes = [ResetCode.new() for _ in range(200)]
    assert len({c.text for c in codes}) == 200
    for code in codes:
        assert len(code.text) == RESET_CODE_LENGTH
        assert set(code.text) <= set(RESET_CODE_ALPHABET)
        assert str(code) == f"{code.text[:5]}-{code.text[5:]}"
    assert not set("ILOU") & set(RESET_CODE_ALPHABET)


def test_a_code_is_read_as_typed_whatever_its_case_spaces_dashes_or_look_alike_letters() -> None:
    sent = ResetCode("7KQ2M9XH41")
    for typed in ("7KQ2M-9XH41", "7kq2m 9xh41", " 7kq2m-9xh4l ", "7KQ2M\t9XH4I"):
        assert ResetCode.typed(typed) == sent
        assert ResetCode.typed(typed).hash == sent.hash
    assert ResetCode.typed("7KQ2M-9XH4O").text == "7KQ2M9XH40"
    assert sent.hash == hashlib.sha256(b"7KQ2M9XH41").hexdigest()
    assert ResetCode.typed("7KQ2M-9XH42").hash != sent.hash


def test_a_reset_names_every_bad_field() -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        check_reset("", "", "corta")
    assert [v.field for v in refused.value.violations] == ["email", "code", "new_password"]
    with pytest.raises(InvalidArgumentError) as refused:
        check_reset("a@b.es", "x" * 41, "larga-de-sobra-2026")
    assert [v.field for v in refused.value.violations] == ["code"]
    check_reset("a@b.es", "7kq2m 9xh41", "larga-de-sobra-2026")


def test_a_reset_request_needs_an_e_mail_address() -> None:
    for bad in ("", "no-es-un-correo", "a" * 250 + "@b.es"):
        with pytest.raises(InvalidArgumentError) as refused:
            check_reset_request(bad)
        assert [v.field for v in refused.value.violations] == ["email"]
    check_reset_request(" Ana@Jaen.ES ")
