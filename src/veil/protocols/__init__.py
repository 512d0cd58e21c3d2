"""Sans-IO protocol state machines (messages in → messages out; no sockets).

:mod:`veil.protocols.machine` holds the generic table-driven :class:`Machine` every
protocol role derives from; :mod:`veil.protocols.secagg` is SecAgg+;
:mod:`veil.protocols.padding` pads messages to sizes fixed before a round.
"""

__all__: list[str] = []
