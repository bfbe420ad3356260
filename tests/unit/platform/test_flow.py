"""The flow's ids and scopes: what every call and every event is tagged with."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

from services.platform.auth import optional_principal, principal_scope
from services.platform.flow import Flow, current_flow, flow_scope, new_id


def test_new_id_is_a_version_4_uuid_in_its_canonical_spelling() -> None:
    ids = [new_id() for _ in range(2_000)]
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text  # lower case, hyphens where uuid puts them
    assert len(set(ids)) == len(ids)


def test_new_ids_use_every_random_bit() -> None:
    # 122 random bits: over many ids each of them is sometimes 0 and sometimes 1.
    seen_set = 0
    seen_clear = 0
    for _ in range(500):
        n = uuid.UUID(new_id()).int
        seen_set |= n
        seen_clear |= ~n
    fixed = (0xF000 << 64) | (0xC000 << 48)
    assert (seen_set & seen_clear) | fixed == (1 << 128) - 1


def test_new_ids_stay_unique_across_refills_of_the_random_bytes() -> None:
    ids = [new_id() for _ in range(3 * 256 + 7)]  # the bytes are read 256 ids at a time
    assert len(set(ids)) == len(ids)


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    new_id()  # random bytes are buffered in the parent now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.close(read)
        os.write(write, ",".join(new_id() for _ in range(4)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        childs = pipe.read().split(",")
    os.waitpid(pid, 0)
    parents = [new_id() for _ in range(4)]
    assert len(childs) == 4
    assert not set(childs) & set(parents)


def test_a_scope_restores_the_flow_after_an_error() -> None:
    outer, inner = Flow("outer"), Flow("inner")
    seen: list[Flow | None] = []

    def fail_inside() -> None:
        with flow_scope(inner) as entered:
            seen.extend([entered, current_flow()])
            raise RuntimeError("boom")

    with flow_scope(outer):
        with pytest.raises(RuntimeError):
            fail_inside()
        assert seen == [inner, inner]
        assert current_flow() is outer


def test_scopes_of_concurrent_tasks_do_not_mix() -> None:
    async def one(name: str) -> tuple[str, str | None]:
        with flow_scope(Flow(name)), principal_scope(None):
            await asyncio.sleep(0)
            return current_flow().correlation_id, None if optional_principal() is None else "someone"

    async def both() -> list[tuple[str, str | None]]:
        return list(await asyncio.gather(one("a"), one("b")))

    assert asyncio.run(both()) == [("a", None), ("b", None)]
