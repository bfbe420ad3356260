"""A Redis subscription's connection ended as the kernel ends it when its server has gone without a
word: its TCP_USER_TIMEOUT passed, or its keepalive probes went unanswered (decision 76).

recv() then fails with ETIMEDOUT, and asyncio's transport closes with that error (`_fatal_error`):
the same call is made here, on the real connection, since a test cannot make the kernel time a
connection out without dropping packets (which needs a network namespace: docs/decisions/0076).
"""

from __future__ import annotations

import errno
import os

from redis.asyncio.client import PubSub


def ended_by_the_kernel(pubsub: PubSub) -> None:
    conn = pubsub.connection
    assert conn is not None, "the subscription has a connection"
    transport = conn._writer.transport
    transport._fatal_error(TimeoutError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT)))
