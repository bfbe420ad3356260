"""Each service's Prometheus endpoint: plaintext HTTP, or HTTPS with the certificate its gRPC
server serves when TLS is configured, asking scrapers for a certificate of the CA with mutual TLS
(decision 61).

Over HTTPS the serving thread only accepts: each connection's handshake is made in the thread
that answers it, within `HANDSHAKE_TIMEOUT_S`, so a caller that connects and says nothing holds
nothing but its own thread. The handshake uses the context of the newest files: a renewal
(decision 59) builds a new one, so a CA that was replaced is trusted no more.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app, start_http_server

from services.platform.grpc.tls import Certificates, Tls

log = logging.getLogger(__name__)

# How long a scraper has to finish its handshake and send its request.
HANDSHAKE_TIMEOUT_S = 10.0


def server_ssl_context(tls: Tls) -> ssl.SSLContext:
    """What the endpoint answers with: `tls`'s certificate and key, and with mutual TLS its CA
    alone as the one a scraper's certificate must come from."""
    cert, key, _ = tls.files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    if tls.mutual and tls.ca is not None:
        context.load_verify_locations(cadata=tls.ca.decode())
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged."""


class _HttpsServer(ThreadingMixIn, WSGIServer):
    """Accepts TCP connections; each one's thread makes its handshake with `context` as it is
    then, and answers it."""

    daemon_threads = True
    context: ssl.SSLContext
    handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(self.handshake_timeout_s)
        try:
            connection = self.context.wrap_socket(request, server_side=True)
        except OSError as exc:  # no certificate, a stranger's, plaintext, silence, a reset
            log.debug("metrics: no TLS handshake with %s: %s", client_address, exc)
            return
        try:
            super().finish_request(connection, client_address)
        finally:
            self.shutdown_request(connection)


def serve_metrics(
    port: int,
    address: str,
    certificates: Certificates,
    *,
    handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S,
) -> WSGIServer:
    """Serve the default registry on `address:port` from a daemon thread, over HTTPS when
    `certificates` has a certificate (following its renewals), else plaintext HTTP."""
    if certificates.tls.cert is None:
        return start_http_server(port, addr=address)[0]
    family = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    server_class = type("MetricsServer", (_HttpsServer,), {"address_family": family})
    server: WSGIServer = make_server(address, port, make_wsgi_app(), server_class, handler_class=_Quiet)
    assert isinstance(server, _HttpsServer)
    server.context = server_ssl_context(certificates.tls)
    server.handshake_timeout_s = handshake_timeout_s

    def renewed(new: Tls) -> None:
        # An OSError (files changed again meanwhile) keeps the context before; the next look retries.
        server.context = server_ssl_context(new)

    certificates.follow(renewed)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
