"""a4co's hand-written code: the shared platform and one package per bounded context."""
