"""`a4co events tail` against real streams, run as an operator runs it."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from services.platform.local_servers import ServerUrls
from tests.integration.events.rig import Rig, orders_created
from tests.support.processes import communicate


async def tail(urls: ServerUrls, prefix: str, *args: str, stdout: int) -> tuple[int | None, str, str]:
    """`a4co events tail --from-start <args>` writing to `stdout` (a pipe's end, or PIPE): its status,
    what it printed and what it said on standard error."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "events", "tail", "--from-start", *args,
        env=dict(os.environ, A4CO_NATS_URL=urls.nats_url, A4CO_PREFIX=prefix, COLUMNS="200"),
        stdout=stdout, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    if stdout != asyncio.subprocess.PIPE:
        os.close(stdout)  # the child holds it now
    out, err = await communicate(proc, 60)
    return proc.returncode, out.decode(), err.decode()


async def test_the_events_are_printed_one_json_object_a_line(rig: Rig, urls: ServerUrls, prefix: str) -> None:
    await orders_created(rig, "o-1", "o-2")
    code, out, err = await tail(urls, prefix, "--count", "2", stdout=asyncio.subprocess.PIPE)
    assert code == 0, err
    printed = [json.loads(line) for line in out.splitlines()]
    assert [(e["event_type"], e["payload"]["order_id"]) for e in printed] == [
        ("a4co.orders.OrderCreated", "o-1"),
        ("a4co.orders.OrderCreated", "o-2"),
    ]


async def test_a_reader_that_stops_reading_ends_the_tail_quietly(
    rig: Rig, urls: ServerUrls, prefix: str
) -> None:
    """`a4co events tail | head`: once the reader is gone, the tail ends with status 0 and nothing on
    standard error, as events.mjs and any filter do, instead of waiting for the next event."""
    await orders_created(rig, "o-1")
    read, write = os.pipe()
    os.close(read)  # the reader went away before the first line
    code, _, err = await tail(urls, prefix, stdout=write)
    assert (code, err) == (0, "")


async def test_a_deployment_without_its_streams_is_said_plainly(urls: ServerUrls, prefix: str) -> None:
    """The prefix of no running deployment (or one whose services never started): one sentence
    naming the stream, no traceback."""
    code, out, err = await tail(urls, prefix, stdout=asyncio.subprocess.PIPE)
    assert (code, out) == (2, ""), err
    assert f"has no stream {prefix}_" in err, err
    assert "Traceback" not in err


async def test_an_event_type_no_contract_declares_is_refused_naming_the_events(
    rig: Rig, urls: ServerUrls, prefix: str
) -> None:
    """A misspelt --type would match nothing and the tail would wait for ever in silence: it is
    refused at once, with the events' names to choose from."""
    await orders_created(rig, "o-1")
    code, out, err = await tail(
        urls, prefix, "--type", "OrderCreated", "--type", "OrderConfirmed", stdout=asyncio.subprocess.PIPE
    )
    assert (code, out) == (2, ""), err
    assert "no event is called OrderConfirmed;" in err, err
    assert "OrderStatusChanged" in err, err
    assert "Traceback" not in err


async def test_events_are_chosen_by_name_or_by_full_type(rig: Rig, urls: ServerUrls, prefix: str) -> None:
    await orders_created(rig, "o-1")
    for chosen in ("OrderCreated", "a4co.orders.OrderCreated"):
        code, out, err = await tail(
            urls, prefix, "--type", chosen, "--count", "1", stdout=asyncio.subprocess.PIPE
        )
        assert code == 0, err
        assert json.loads(out)["payload"]["order_id"] == "o-1"


async def test_a_message_that_is_no_event_is_said_with_where_it_lies(
    rig: Rig, urls: ServerUrls, prefix: str
) -> None:
    """A body no contract decodes, among events: a line saying why, with its subject, stream and
    sequence (to find it, and the dead letters the consumers made of it); `--count` counts events.
    Under `--type` it prints only when its headers claim one of those types."""
    subject = rig.topology.subject("a4co.orders.order.created")
    junk = await rig.js.publish(subject, b"\x00not an event")
    claimed = await rig.js.publish(subject, b"\x00nor this", headers={"ce-type": "a4co.orders.OrderCreated"})
    await orders_created(rig, "o-1", committed=2)  # after the two above

    code, out, err = await tail(urls, prefix, "--count", "1", stdout=asyncio.subprocess.PIPE)
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    said = "body is not an EventEnvelope:"
    assert [line.get("undecodable", "")[: len(said)] for line in lines] == [said, said, ""], out
    stream = rig.topology.stream("ORDERS")
    assert [(x["subject"], x["stream"], x["seq"]) for x in lines[:2]] == [
        (subject, stream, junk.seq),
        (subject, stream, claimed.seq),
    ]
    assert ("claimed_type" in lines[0], lines[1]["claimed_type"]) == (False, "a4co.orders.OrderCreated")
    assert lines[2]["payload"]["order_id"] == "o-1"

    # Under --type, the junk claims no type and stays out; the one claiming OrderCreated is shown.
    code, out, err = await tail(
        urls, prefix, "--type", "OrderCreated", "--count", "1", stdout=asyncio.subprocess.PIPE
    )
    assert code == 0, err
    assert [json.loads(line).get("seq") for line in out.splitlines()] == [claimed.seq, None], out
