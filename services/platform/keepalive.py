"""How a TCP connection to PostgreSQL or Redis finds that its server has gone without a word.

A failover that moves the server's address, a host that dies, a network or a NAT that drops the
connection's packets: no FIN, no RST. Without more, a read then waits for ever (a LISTEN, a pub/sub
listener, a pooled connection given back under a cancelled call) and a write for the kernel's 15
minutes or so of retransmissions. With these options, as libpq's keepalives_idle/_interval/_count
and tcp_user_timeout give, an idle connection is probed after 10 s, then every 5 s, and the kernel
ends a connection once 30 s pass with nothing it sent acknowledged, a probe or data
(TCP_USER_TIMEOUT decides over the probes' count when both are set): the statement, the command or
the wait fails, and the pool or the loop connects again. A server that is alive answers the probes
however long its work takes (decisions 74 and 76).
"""

from __future__ import annotations

import socket

KEEPALIVE_IDLE_S = 10
KEEPALIVE_INTERVAL_S = 5
KEEPALIVE_PROBES = 3
UNACKNOWLEDGED_MS = 30_000


def tcp_options() -> dict[int, int]:
    """The IPPROTO_TCP-level options (option, value) this platform has, for a socket whose
    SO_KEEPALIVE is on. Linux's names; macOS's TCP_KEEPALIVE is the idle time."""
    wanted = (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE_S),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
        ("TCP_KEEPCNT", KEEPALIVE_PROBES),
        ("TCP_USER_TIMEOUT", UNACKNOWLEDGED_MS),
    )
    return {getattr(socket, name): value for name, value in wanted if hasattr(socket, name)}
