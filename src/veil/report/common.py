"""Small HTML helpers the report's sections share (escaping, numbers, tables, images)."""

from __future__ import annotations

import html
import math
from typing import Any

__all__ = ["e", "num", "pct", "img", "table", "td"]


def e(x: Any) -> str:
    """HTML-escaped ``str(x)``."""
    return html.escape(str(x))


def num(v: Any, fmt: str = "{:.3f}", none: str = "—") -> str:
    """A finite number formatted, else ``none`` (booleans and strings are not numbers)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        return none
    return fmt.format(v)


def pct(v: Any) -> str:
    """A fraction as a percentage with two decimals."""
    return num(v * 100 if isinstance(v, (int, float)) else None, "{:.2f} %")


def img(uri: str | None, alt: str) -> str:
    """An embedded figure, or a note that there was nothing to plot."""
    return (
        f'<img src="{uri}" alt="{e(alt)}">'
        if uri
        else f'<p class="note">No data for {e(alt)}.</p>'
    )


def table(head: list[str], rows: list[list[str]]) -> str:
    """A table from a header and rows of ready ``<td>`` cells."""
    h = "".join(f"<th>{e(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def td(v: str, num: bool = False) -> str:
    """A cell (right-aligned for numbers); ``v`` is already HTML."""
    return f'<td class="n">{v}</td>' if num else f"<td>{v}</td>"
