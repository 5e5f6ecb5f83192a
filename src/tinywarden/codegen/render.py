"""Rendering helpers every C emitter shares: the generator line, template files and the one C-literal printer.

:mod:`tinywarden.codegen.c` (the detector loop) and :mod:`tinywarden.codegen.respond` (the response machine)
both print through these, so a constant looks the same wherever it appears.

>>> c_literal(-2**31, "int32"), c_literal(5, "int64"), c_literal(7, "uint32")
('INT32_MIN', 'INT64_C(5)', 'UINT32_C(7)')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from string import Template

import numpy as np

from tinywarden import __version__
from tinywarden.kernels import CTYPES

GENERATOR_VERSION = 1
GENERATOR = f"tinywarden {__version__} (codegen.c v{GENERATOR_VERSION})"


def template(name: str) -> Template:
    """A template file of ``codegen/templates``."""
    return Template(resources.files("tinywarden.codegen").joinpath("templates", name).read_text())


def c_comment(text: object) -> str:
    r"""``text`` written so that it stays inside the C block comment it is placed in, whatever it holds.

    Names that reach a comment come from the model file (a channel name is a CSV header), so they are data,
    never C: every character outside printable ASCII, and the backslash, is written as an escape (no newline is
    left for a backslash to splice a ``*/`` across), and ``*/`` and ``/*`` are broken with a space.

    >>> c_comment("cpu */ int x; /* y"), c_comment("a\\\nb")
    ('cpu * / int x; / * y', 'a\\x5c\\x0ab')
    """
    out = "".join(c if " " <= c <= "~" and c != "\\" else f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}"
                  for c in str(text))
    while "*/" in out or "/*" in out:
        out = out.replace("*/", "* /").replace("/*", "/ *")
    return out


def c_literal(v: int, dtype: str) -> str:
    """A C literal of the integer ``v`` stored as ``dtype`` (``int8`` ... ``int64``, ``uint8`` ... ``uint32``)."""
    v = int(v)
    if dtype == "int64":
        return f"INT64_C({v})" if v != -(2**63) else "INT64_MIN"
    if dtype == "int32" and v == -(2**31):
        return "INT32_MIN"
    if dtype == "uint32":
        return f"UINT32_C({v})"
    return str(v)


def c_float(v: float) -> str:
    """Exact C99 hexadecimal float literal of a float32 value."""
    return f"{float(np.float32(v)).hex()}f"


def c_array(name: str, values: np.ndarray | Sequence[int], dtype: str | None = None) -> str:
    """A ``static const`` array definition of ``values`` (a numpy array, or ints stored as ``dtype``)."""
    a = np.asarray(values).ravel()
    dt = dtype or a.dtype.name
    if dt == "float32":
        ctype, vals = "float", [c_float(v) for v in a]
    else:
        ctype, vals = {**CTYPES, "uint32": "uint32_t"}[dt], [c_literal(v, dt) for v in a]
    per_line = 6 if ctype in ("float", "int64_t") else 12
    lines = ["    " + ", ".join(vals[i : i + per_line]) + "," for i in range(0, len(vals), per_line)]
    return template("const_array.c.tmpl").substitute(ctype=ctype, name=name, size=max(len(a), 1),
                                                     values="\n".join(lines) if lines else "    0,")


def c_defines(values: Mapping[str, int] | Iterable[tuple[str, int]]) -> str:
    """``#define NAME value`` lines (values beyond int32 as ``INT64_C``)."""
    items = values.items() if isinstance(values, Mapping) else values
    return "\n".join(f"#define {name} {c_literal(v, 'int64') if abs(int(v)) > 2**31 - 1 else int(v)}"
                     for name, v in items)
