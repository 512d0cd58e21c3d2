"""Sans-IO protocol state machines (messages in → messages out; no sockets)."""

__all__: list[str] = []
