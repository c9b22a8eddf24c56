r"""Output that cannot be turned against its reader: text from manifests and protocols (case ids, site
ids, subgroup values, gate names, failure reasons) made safe for the three places it is written.

- :func:`xml_text` — JUnit XML. XML 1.0 allows only the characters of its ``Char`` production
  (``#x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF]``); one other character
  (a C0 control such as ``\x00`` or ``\x1b``, a lone surrogate, ``\ufffe``/``\uffff``) makes the whole
  file not well-formed and a CI server drops every result in it. Such characters are replaced by a
  visible escape (``\x1b``, ``\ud800``), so the reader still sees that something odd was there. The
  XML specials (``& < > "``) are escaped by the serializer (:mod:`xml.etree.ElementTree`).
- :func:`markdown_text` — ``gates.md``, posted as a pull-request comment. HTML specials become
  entities (``&lt;script&gt;`` is text, never a tag); the characters of Markdown's inline syntax
  (``\ ` * _ [ ] | ~``: emphasis, code, links, images, table cells, strike-through) are
  backslash-escaped, so ``[x](javascript:…)`` is no link; ``@user`` and ``#123`` get a zero-width
  joiner after the sigil (no mention, no cross-reference notification) and every ``scheme:`` and
  ``www.`` one before the colon or dot (no autolink of ``https://…``, ``www.…`` or ``javascript:``).
  Line breaks become spaces (a table row is one line); other control characters become visible
  escapes, as for the terminal (``validate gate`` prints the comment). The text reads the same once
  rendered.
- :func:`terminal_text` — the summary printed on the terminal: control characters (C0, DEL, C1: an
  escape sequence can recolour, retitle or rewrite the terminal) and lone surrogates (which cannot
  be encoded and would crash the print) become visible escapes.
- :func:`csv_cell` / :func:`csv_safe` — CSV files opened in a spreadsheet (``failures.csv``, the
  dashboard's downloads). The OWASP rule against formula (CSV) injection: a *text* cell starting with
  ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is prefixed with a single quote ``'``, which
  spreadsheets read as "this is text". Numbers are never touched: numeric columns stay numbers, and a
  text cell that is a plain decimal number (``-0.5``, ``+3``, ``1e-4``) is no formula and stays as it
  is. A text cell that already starts with ``'`` is prefixed too, so that :func:`csv_uncell` undoes
  the escaping exactly (the bundle's reader shows the original text).
"""

from __future__ import annotations

import re
from typing import Any

ZWJ = "\u200d"  # zero-width joiner: invisible, but breaks mentions, references and autolinks

_XML_ILLEGAL = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_TERMINAL_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")  # parentheses are inert once "[" and "]" are
_MD_SIGIL = re.compile(r"([@#])(?=\w)")
_MD_SCHEME = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*)(?=:\S)|\b(www)(?=\.)")
CSV_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _visible(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def xml_text(value: Any) -> str:
    """``str(value)`` with every character XML 1.0 forbids replaced by a visible escape."""
    return _XML_ILLEGAL.sub(lambda m: _visible(m.group()), str(value))


def terminal_text(value: Any) -> str:
    """``str(value)`` with control characters and lone surrogates replaced by visible escapes."""
    return _TERMINAL_UNSAFE.sub(lambda m: _visible(m.group()), str(value))


def markdown_text(value: Any) -> str:
    """``str(value)`` as inert Markdown for a table cell or a heading (see the module docstring)."""
    text = str(value).replace("\r\n", " ").replace("\n", " ").replace("\r", " ").replace("\t", " ")
    text = xml_text(terminal_text(text))  # `validate gate` prints it: no control character either
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    text = _MD_SPECIAL.sub(r"\\\1", text)
    text = _MD_SIGIL.sub(lambda m: m.group(1) + ZWJ, text)
    # schemes ("javascript:x", "https://") and "www.": no autolink can start here
    return _MD_SCHEME.sub(lambda m: m.group() + ZWJ, text)


def csv_cell(value: Any) -> Any:
    """One cell as a spreadsheet can open it safely (OWASP): text starting with a formula trigger gets
    a leading ``'``; numbers, and text that is a plain decimal number, are returned unchanged."""
    if not isinstance(value, str) or not value:
        return value
    if value[0] == "'" or (value.startswith(CSV_TRIGGERS) and not _PLAIN_NUMBER.fullmatch(value)):
        return "'" + value
    return value


def csv_uncell(value: Any) -> Any:
    """The inverse of :func:`csv_cell` (for text read back from a file it wrote)."""
    if (
        isinstance(value, str)
        and len(value) > 1
        and value[0] == "'"
        and (value[1] == "'" or value[1:].startswith(CSV_TRIGGERS))
    ):
        return value[1:]
    return value


def csv_safe(frame):
    """A copy of a pandas DataFrame with :func:`csv_cell` applied to its text cells (object or string
    columns); numeric, boolean and date columns are left as they are. Column names are escaped too."""
    out = frame.copy()
    for col in out.columns:
        if _is_text(out[col]):
            out[col] = out[col].map(csv_cell, na_action="ignore")
    out.columns = [csv_cell(c) if isinstance(c, str) else c for c in out.columns]
    return out


def csv_unsafe(frame):
    """The inverse of :func:`csv_safe` for a frame read back with ``dtype=str``."""
    out = frame.copy()
    for col in out.columns:
        if _is_text(out[col]):
            out[col] = out[col].map(csv_uncell, na_action="ignore")
    out.columns = [csv_uncell(c) for c in out.columns]
    return out


def _is_text(column) -> bool:
    """Object or string columns (numpy object, pandas ``string``/``str``); never numbers, booleans, dates."""
    import pandas as pd

    return pd.api.types.is_object_dtype(column) or pd.api.types.is_string_dtype(column)
