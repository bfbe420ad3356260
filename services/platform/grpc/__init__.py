"""gRPC mechanisms shared by every service: server, interceptors, status mapping, clients."""
