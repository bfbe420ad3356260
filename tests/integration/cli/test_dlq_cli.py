"""`a4co dlq` against a real dead-letter stream, run as an operator would run it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator

from google.protobuf.message import Message

from a4co.orders.events.v1 import order_events_pb2
from services.platform.events.consumer import H_DLQ_SUBJECT, HandlerContext
from services.platform.events.dlq import DELETES_IN_FLIGHT, DeadLetter, DeadLetterFilter, DeadLetterQueue
from services.platform.local_servers import ServerUrls
from tests.integration.events.rig import Rig, order_created, running
from tests.support.cli import run_a4co_on as a4co
from tests.support.waiting import eventually


async def test_list_show_stats_replay_discard(rig: Rig, urls: ServerUrls, prefix: str) -> None:
    fixed = False

    async def handler(event: Message, ctx: HandlerContext) -> None:
        if not fixed:
            raise ValueError(f"no tariff for order {ctx.event.envelope.aggregate_id}")
        await ctx.conn.execute("INSERT INTO effects (event_id) VALUES ($1)", ctx.event.event_id)

    from dataclasses import replace

    from services.platform.resilience import Backoff
    from tests.integration.events.rig import FAST

    quick = replace(FAST, backoff=Backoff(first_s=0.05, cap_s=0.1))
    consumer = await rig.consumer("payments", {order_events_pb2.OrderCreated: handler}, policy=quick)
    for order_id in ("o-1", "o-2"):
        await rig.commit(order_created(order_id), order_id)
    await rig.js.publish(rig.topology.subject("a4co.orders.order.created"), b"garbage")
    async with running(rig.relay()):
        await eventually(lambda: consumer.stats.dead_lettered == 3, what="three dead letters")

    code, out = await a4co(urls, prefix, "dlq", "list", "--json")
    assert code == 0, out
    listed = json.loads(out)
    assert sorted(x["reason"] for x in listed) == [
        "HANDLER_FAILED",
        "HANDLER_FAILED",
        "UNDECODABLE",
    ]
    failed_seq = next(x["seq"] for x in listed if x["reason"] == "HANDLER_FAILED")

    code, out = await a4co(urls, prefix, "dlq", "show", str(failed_seq))
    shown = json.loads(out)
    assert shown["event"]["order_id"] in {"o-1", "o-2"}
    assert shown["headers"]["a4co-dlq-consumer"] == "payments"

    code, out = await a4co(urls, prefix, "dlq", "stats", "--json")
    patterns = json.loads(out)
    assert {(p["reason"], p["pattern"], p["count"]) for p in patterns} >= {
        ("HANDLER_FAILED", "ValueError: no tariff for order o-<n>", 2)
    }

    code, out = await a4co(urls, prefix, "dlq", "replay")
    assert code != 0, "a replay without a selection is refused"
    assert "--all" in out

    code, out = await a4co(urls, prefix, "dlq", "replay", "--reason", "HANDLER_FAILED", "--dry-run")
    assert code == 0, out
    assert "would replay 2" in out

    fixed = True
    code, out = await a4co(
        urls, prefix, "dlq", "replay", "--consumer", "payments", "--reason", "HANDLER_FAILED"
    )
    assert code == 0, out
    assert "replayed 2" in out
    await eventually(lambda: consumer.stats.handled == 2, what="replayed events handled")

    code, out = await a4co(urls, prefix, "dlq", "discard", "--reason", "UNDECODABLE")
    assert "discarded 1" in out
    code, out = await a4co(urls, prefix, "dlq", "list", "--json")
    assert json.loads(out) == []
    assert int(await consumer.pool.fetchval("SELECT count(*) FROM effects")) == 2


async def test_a_dead_letter_that_is_not_there_is_said_not_a_traceback(
    rig: Rig, urls: ServerUrls, prefix: str
) -> None:
    """show, replay and discard naming a sequence the DLQ does not hold (never, or dealt with
    already): one line naming it, status 1; the letters that are there are still dealt with."""
    await rig.js.publish(rig.topology.subject("a4co.dlq.payments.orders"), b"a dead letter")
    (letter,) = json.loads((await a4co(urls, prefix, "dlq", "list", "--json"))[1])
    seq = letter["seq"]

    code, out = await a4co(urls, prefix, "dlq", "show", str(seq + 1))
    assert code == 1, out
    assert f"no dead letter {seq + 1} in {prefix}_DLQ (a4co dlq list shows those there)" in out
    assert "Traceback" not in out

    code, out = await a4co(urls, prefix, "dlq", "replay", str(seq + 1), "--dry-run")
    assert code == 1, out
    assert f"no such dead letter in the DLQ: {seq + 1} (replayed or discarded already?" in out

    code, out = await a4co(urls, prefix, "dlq", "discard", str(seq), str(seq + 1))
    assert code == 1, out
    assert f"discarded 1 dead letter(s): [{seq}]" in out
    assert f"no such dead letter in the DLQ: {seq + 1} " in out
    assert json.loads((await a4co(urls, prefix, "dlq", "list", "--json"))[1]) == []

    code, out = await a4co(urls, prefix, "dlq", "discard", str(seq))
    assert code == 1, "discarded already"
    assert f"no such dead letter in the DLQ: {seq} " in out


async def test_a_deployment_without_a_dead_letter_stream_is_said(urls: ServerUrls, prefix: str) -> None:
    """The prefix of no running deployment: not an empty list, which would say all is well."""
    for command in (("list",), ("stats",), ("show", "1"), ("discard", "--all")):
        code, out = await a4co(urls, prefix, "dlq", *command)
        assert code == 2, (command, out)
        assert f"has no stream {prefix}_DLQ" in out, (command, out)
        assert "Traceback" not in out


async def test_every_dead_letter_discarded_at_once_and_said_in_runs(
    rig: Rig, urls: ServerUrls, prefix: str
) -> None:
    """`discard --all` removes the letters it listed in one purge and prints their sequences as runs;
    a letter dead-lettered afterwards is there to be listed."""
    subject = rig.topology.subject("a4co.dlq.payments.orders")
    seqs = [(await rig.js.publish(subject, f"letter {i}".encode())).seq for i in range(5)]
    await rig.js.delete_msg(rig.topology.stream("DLQ"), seqs[2])
    code, out = await a4co(urls, prefix, "dlq", "discard", "--all")
    assert code == 0, out
    assert f"discarded 4 dead letter(s): [{seqs[0]}-{seqs[1]}, {seqs[3]}-{seqs[4]}]" in out, out
    assert json.loads((await a4co(urls, prefix, "dlq", "list", "--json"))[1]) == []
    later = (await rig.js.publish(subject, b"a later letter")).seq
    assert [x["seq"] for x in json.loads((await a4co(urls, prefix, "dlq", "list", "--json"))[1])] == [later]


async def test_a_selection_is_discarded_and_the_others_stay(rig: Rig, urls: ServerUrls, prefix: str) -> None:
    """payments' letters, with one of orders' between them: payments' go (the first two in one
    purge, the last on its own), orders' stays."""
    subject = rig.topology.subject("a4co.dlq.payments.orders")
    seqs = [
        (await rig.js.publish(subject, b"a dead letter", headers={"a4co-dlq-consumer": consumer})).seq
        for consumer in ("payments", "payments", "orders", "payments")
    ]
    code, out = await a4co(urls, prefix, "dlq", "discard", "--consumer", "payments")
    assert code == 0, out
    assert f"discarded 3 dead letter(s): [{seqs[0]}-{seqs[1]}, {seqs[3]}]" in out, out
    left = json.loads((await a4co(urls, prefix, "dlq", "list", "--json"))[1])
    assert [(x["seq"], x["consumer"]) for x in left] == [(seqs[2], "orders")]


async def test_a_long_selection_among_other_letters_is_discarded_and_only_it(
    rig: Rig, urls: ServerUrls, prefix: str
) -> None:
    """Three hundred letters, every other one payments': payments' go one by one, many at a time
    (more than DELETES_IN_FLIGHT of them), and each of orders' stays."""
    subject = rig.topology.subject("a4co.dlq.payments.orders")
    acks = await asyncio.gather(*[
        await rig.js.publish_async(subject, b"a dead letter", headers={"a4co-dlq-consumer": consumer})
        for consumer in ("orders", "payments") * 150
    ])  # fmt: skip
    seqs = [ack.seq for ack in acks]
    assert len(seqs[1::2]) > DELETES_IN_FLIGHT
    code, out = await a4co(urls, prefix, "dlq", "discard", "--consumer", "payments")
    assert code == 0, out
    assert f"discarded 150 dead letter(s): [{', '.join(map(str, seqs[1::2]))}]" in out.replace("\n", ""), out
    left = json.loads((await a4co(urls, prefix, "dlq", "list", "--json", "--limit", "1000"))[1])
    assert [(x["seq"], x["consumer"]) for x in left] == [(seq, "orders") for seq in seqs[::2]]


def _one_taken_after_reading(dlq: DeadLetterQueue, rig: Rig, seq: int) -> None:
    """Another operator's discard deletes letter `seq` once `dlq` has read the letters."""
    reading = dlq.letters

    async def letters(where: DeadLetterFilter | None = None) -> AsyncGenerator[DeadLetter, None]:
        async for letter in reading(where):
            yield letter
        await rig.js.delete_msg(rig.topology.stream("DLQ"), seq)

    dlq.letters = letters  # type: ignore[method-assign]


async def test_a_letter_that_went_meanwhile_is_not_said_discarded(rig: Rig) -> None:
    """A letter another operator discarded between this discard's reading and its deleting is not
    among those it discarded, and the others go all the same."""
    subject = rig.topology.subject("a4co.dlq.payments.orders")
    seqs = [
        (await rig.js.publish(subject, b"a dead letter", headers={"a4co-dlq-consumer": consumer})).seq
        for consumer in ("orders", "payments", "payments")
    ]
    dlq = DeadLetterQueue(rig.js, rig.topology)
    _one_taken_after_reading(dlq, rig, seqs[1])
    assert await dlq.discard(DeadLetterFilter(consumer="payments")) == [seqs[2]]
    assert [x.seq for x in await DeadLetterQueue(rig.js, rig.topology).browse()] == [seqs[0]]


async def test_a_letter_that_went_meanwhile_is_replayed_all_the_same(rig: Rig) -> None:
    """A letter discarded by another operator after this replay read it is published again and
    said replayed: its deletion finds nothing to delete."""
    subject = rig.topology.subject("a4co.dlq.payments.orders")
    original = rig.topology.subject("a4co.orders.order.created")
    headers = {"a4co-dlq-consumer": "payments", H_DLQ_SUBJECT: original}
    seq = (await rig.js.publish(subject, b"a dead letter", headers=headers)).seq
    dlq = DeadLetterQueue(rig.js, rig.topology)
    _one_taken_after_reading(dlq, rig, seq)
    before = (await rig.js.stream_info(rig.topology.stream("ORDERS"))).state.last_seq
    report = await dlq.replay(rate_per_s=0)
    assert (report.replayed, report.failed) == ([seq], {})
    assert (await rig.js.stream_info(rig.topology.stream("ORDERS"))).state.last_seq == before + 1
