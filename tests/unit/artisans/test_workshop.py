"""A workshop's update: the fields named, trimmed, and which of them changed."""

from __future__ import annotations

from services.artisans.domain import WORKSHOP_FIELDS, Workshop, apply_workshop_update

TITO = Workshop(
    "tito", "Alfarería Tito", "ceramica", "Úbeda", 38.0133, -3.3706, {"street": "Calle Real 1"}, "Verde."
)


def test_only_the_fields_named_are_taken_and_those_that_differ_are_reported_in_order() -> None:
    changes = Workshop("x", " Alfarería Tito ", "madera", " Baeza ", 37.99, -3.47, {}, "Otra.")
    updated, changed = apply_workshop_update(TITO, changes, ["bio", "location", "display_name"])
    assert updated == Workshop(
        "tito", "Alfarería Tito", "ceramica", "Úbeda", 37.99, -3.47, TITO.address, "Otra."
    )
    assert changed == ["location", "bio"], "the name trimmed is the same name"
    _, everything = apply_workshop_update(TITO, changes, list(WORKSHOP_FIELDS))
    assert everything == ["craft", "locality", "location", "address", "bio"]


def test_a_move_along_one_axis_is_a_change_and_the_same_values_are_none() -> None:
    north = Workshop("", "", "", "", TITO.latitude + 0.01, TITO.longitude, {}, "")
    assert apply_workshop_update(TITO, north, ["location"])[1] == ["location"]
    assert apply_workshop_update(TITO, TITO, list(WORKSHOP_FIELDS)) == (TITO, [])
