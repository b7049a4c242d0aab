"""Plain-text tables and human-readable numbers for the analysis reports."""
from __future__ import annotations

from typing import Any

from cnnzoo.analysis.geometry import Number


def human(n: Number, unit: str = "") -> str:
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f} {suffix}{unit}".rstrip()
    return f"{n:g} {unit}".rstrip()


def human_bytes(n: int) -> str:
    for div, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= div:
            return f"{n / div:.2f} {suffix}"
    return f"{n} B"


def fmt_pair(p: Any) -> str:
    if p is None:
        return ""
    if isinstance(p, str):
        return p
    a, b = (fmt_num(v) for v in p)
    return a if a == b else f"{a}x{b}"


def fmt_num(v: Number) -> str:
    return str(v) if isinstance(v, int) else f"{v:.3g}"


def fmt_shape(s: Any) -> str:
    if s and isinstance(s[0], tuple):
        return ", ".join(fmt_shape(x) for x in s)
    return "x".join(str(v) for v in s) if s else "scalar"


def table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        cells = [r[i].rjust(widths[i]) if i in right else r[i].ljust(widths[i]) for i in range(len(r))]
        return "  ".join(cells).rstrip()

    rule = "-" * len(line(["-" * w for w in widths]))
    return [line(header), rule, *(line(r) for r in rows), rule]

