"""The `a4co` command line for operators: status, the dead-letter queue, events, traces, demos,
the saga's invariants and the deployment's NATS permissions."""

import os

# gRPC's core logs each failed TLS handshake on standard error at INFO (a caller with the wrong
# CA, say), which would break into the tables and the JSON this command prints; its errors still
# show. Read when grpc is first imported, so set before anything here imports it.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
