"""A small libxo: `xo_emit` format strings rendered as text, JSON or XML.

FreeBSD's netstat, arp and ifconfig describe every field of their output once, in
libxo's format language (xo_format(5)): `{:sent-packets/%ju} {N:/packet%s sent}`
prints `3 packets sent` as text and records `"sent-packets": 3` for JSON or
`<sent-packets>3</sent-packets>` for XML. The tools here use the same format strings,
so their text stays what FreeBSD prints and `--libxo json|xml` gives scripts FreeBSD's
field names.

The subset implemented: roles T (title), L (label), N (note), P (padding), D
(decoration) and V (value, the default); modifiers d (display only), e (encoding
only), k (key), q (quote), n (no quotes), t (trim), p (plural, on a note: the
`singular,plural` form chosen by the previous value); containers, lists and
instances (xo_open_container, xo_open_list, xo_open_instance). C formats map onto
Python's `%` operator (length modifiers dropped, `%u` as `%d`, `*` widths taken
from the arguments as in C).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

from vimage.cli import UsageError

if TYPE_CHECKING:
    from vimage.cli import Context

STYLES = frozenset({"text", "json", "xml"})
# libxo options that change nothing here (warnings go with the text; no HTML)
_HARMLESS = frozenset({"warn", "keys", "underscores", "no-top", "not-first", "flush",
                       "no-locale", "no-humanize", "units", "info", "warn-xml"})

_FIELD = re.compile(r"\{([^:{}]*):([^}]*)\}")
_CONV = re.compile(r"%([-+ #0]*)(\*|\d+)?(?:\.(\*|\d+))?(?:hh|h|ll|l|j|z|t|q)?([diouxXsc%])")
_NUMERIC = frozenset("diu")  # encoded as JSON numbers; %x and %o keep their text


def parse_args(argv: list[str]) -> tuple[list[str], str, bool]:
    """xo_parse_args(3): remove `--libxo STYLE[,OPTS]` or `--libxo=...` (and libxo's
    `--libxo:J`-style letters) from `argv`; return the rest, the style and `pretty`."""
    rest: list[str] = []
    style, pretty = "text", False
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            rest += argv[i - 1:]
            break
        if not arg.startswith("--libxo"):
            rest.append(arg)
            continue
        tail = arg[len("--libxo"):]
        if tail.startswith("="):
            spec = tail[1:]
        elif tail.startswith(":"):
            spec = _letters(tail[1:])
        elif tail == "":
            if i >= len(argv):
                raise UsageError("--libxo: missing style")
            spec = argv[i]
            i += 1
        else:
            rest.append(arg)
            continue
        for word in spec.split(","):
            if word in STYLES:
                style = word
            elif word == "pretty":
                pretty = True
            elif word not in _HARMLESS and word:
                raise UsageError(f"--libxo: unknown or unsupported option '{word}'")
    return rest, style, pretty


def _letters(spec: str) -> str:
    """libxo's one-letter flags: J json, X xml, T text, P pretty, W warn."""
    names = {"J": "json", "X": "xml", "T": "text", "P": "pretty", "W": "warn"}
    try:
        return ",".join(names[c] for c in spec)
    except KeyError as exc:
        raise UsageError(f"--libxo: unknown flag '{exc.args[0]}'") from None


def _c_to_py(fmt: str) -> str:
    """A C printf format as Python's: length modifiers dropped, %u as %d."""
    def conv(m: re.Match[str]) -> str:
        flags, width, prec, kind = m.groups()
        if kind == "%":
            return "%%"
        out = "%" + flags + (width or "")
        if prec is not None:
            out += "." + prec
        return out + ("d" if kind == "u" else kind)
    return _CONV.sub(conv, fmt)


def _arg_count(fmt: str) -> int:
    count = 0
    for m in _CONV.finditer(fmt):
        if m.group(4) == "%":
            continue
        count += 1 + (m.group(2) == "*") + (m.group(3) == "*")
    return count


def _bare(fmt: str) -> str:
    """The format without widths and precisions: what an encoding records."""
    return _CONV.sub(lambda m: "%%" if m.group(4) == "%" else "%" + m.group(4), fmt)


# a compiled format: pieces ("t", text), ("p", singular, plural), ("d", pyfmt, nargs) and
# ("v", modifiers, name, pyfmt, nargs, which args are values, numeric, bare, encoding)
Compiled = tuple[tuple, ...]


def compile_format(fmt: str) -> Compiled:
    """Parse an xo_emit format string into pieces Xo.emit() runs (immutable: a table of
    lines can hold them, compiled once)."""
    pieces: list[tuple] = []
    pos = 0
    for m in _FIELD.finditer(fmt):
        if m.start() > pos:
            pieces.append(("t", fmt[pos:m.start()]))
        pieces.append(_compile_field(m.group(1), m.group(2)))
        pos = m.end()
    if pos < len(fmt):
        pieces.append(("t", fmt[pos:]))
    return tuple(pieces)


def _compile_field(mods: str, body: str) -> tuple:
    # "\\/" is a slash inside a format (`broadcast\\/multicast`), not a separator
    content, _, formats = body.replace("\\/", "\0").partition("/")
    field_fmt, slash, enc_fmt = (f.replace("\0", "/") for f in formats.partition("/"))
    content = content.replace("\0", "/")
    role = next((c for c in mods if c in "TLNPDV"), "V")
    if role != "V":
        if "p" in mods and field_fmt:
            singular, _, plural = field_fmt.partition(",")
            return ("p", singular, plural)
        if not field_fmt:
            return ("t", content)
        return ("d", _c_to_py(field_fmt), _arg_count(field_fmt))
    fmt = field_fmt or "%s"
    keep: list[bool] = []
    for m in _CONV.finditer(fmt):
        if m.group(4) != "%":
            keep += [False] * ((m.group(2) == "*") + (m.group(3) == "*")) + [True]
    kinds = [m.group(4) for m in _CONV.finditer(fmt) if m.group(4) != "%"]
    numeric = bool(kinds) and kinds[0] in _NUMERIC
    enc = _c_to_py(enc_fmt) if slash and enc_fmt else ""
    return ("v", mods, content, _c_to_py(fmt), len(keep), tuple(keep), numeric,
            _c_to_py(_bare(fmt)), enc)


def _encoded(mods: str, numeric: bool, bare: str, enc: str,
             values: tuple[object, ...]) -> object:
    """A value as JSON and XML record it: a number for a %d/%u field (unless quoted),
    else the text of its encoding format (or of its format without widths)."""
    if enc:
        text = enc % values
    elif len(values) == 1 and numeric and "q" not in mods and isinstance(values[0], int):
        return values[0]
    else:
        text = bare % values
    if "t" in mods:
        text = text.strip()
    if "n" in mods:
        if text in ("true", "false"):
            return text == "true"
        if text.lstrip("-").isdigit():
            return int(text)
    return text


class Xo:
    """One output handle: text accumulates as printed; values go into a tree of
    containers (dicts) and lists (of dicts) for JSON and XML."""

    def __init__(self, style: str = "text", pretty: bool = False,
                 version: str | None = None) -> None:
        self.style = style
        self.pretty = pretty
        self.text: list[str] = []
        self.root: dict[str, object] = {}
        if version is not None:
            self.root["__version"] = version
        self.stack: list[dict[str, object] | list[dict[str, object]]] = [self.root]
        self._last_number: int | None = None

    @property
    def encoding(self) -> bool:
        return self.style != "text"

    # -- structure -----------------------------------------------------------------
    def _top(self) -> dict[str, object]:
        top = self.stack[-1]
        if isinstance(top, list):
            raise ValueError("libxo: a value in a list outside an instance")
        return top

    def open_container(self, name: str) -> None:
        top = self._top()
        child = top.get(name)
        if not isinstance(child, dict):
            child = {}
            top[name] = child
        self.stack.append(child)

    def close_container(self, _name: str = "") -> None:
        self.stack.pop()

    def open_list(self, name: str) -> None:
        top = self._top()
        child = top.get(name)
        if not isinstance(child, list):
            child = []
            top[name] = child
        self.stack.append(child)

    close_list = close_container

    def open_instance(self, name: str) -> None:
        if not isinstance(self.stack[-1], list):
            self.open_list(name)
            self.stack.append(self.stack.pop())  # the list stays open after the instance
        lst = self.stack[-1]
        assert isinstance(lst, list)
        inst: dict[str, object] = {}
        lst.append(inst)
        self.stack.append(inst)

    close_instance = close_container

    def set_value(self, name: str, value: object) -> None:
        self._top()[name] = value

    # -- xo_emit ---------------------------------------------------------------------
    def emit(self, fmt: str | Compiled, *args: object) -> None:
        """xo_emit(3): text and fields in `fmt` (a format string, or one compile()d
        once for a line printed often), the arguments in order."""
        pieces = compile_format(fmt) if isinstance(fmt, str) else fmt
        text = self.text
        at = 0
        for piece in pieces:
            kind = piece[0]
            if kind == "t":
                text.append(piece[1])
            elif kind == "v":
                at = self._value(piece, args, at)
            elif kind == "p":  # {Np:/singular,plural}
                text.append(piece[1] if self._last_number == 1 else piece[2])
            else:  # a decoration with a format
                nargs = piece[2]
                text.append(piece[1] % args[at:at + nargs])
                at += nargs
        if at != len(args):
            raise ValueError(f"libxo: {len(args) - at} arguments left over")

    def _value(self, piece: tuple, args: tuple[object, ...], at: int) -> int:
        _, mods, name, pyfmt, nargs, keep, numeric, bare, enc = piece
        mine = args[at:at + nargs]
        if "e" not in mods:
            self.text.append(pyfmt % mine)
        if mine:
            self._last_number = mine[-1] if isinstance(mine[-1], int) else None
        if self.style != "text" and name and "d" not in mods:
            values = tuple(v for v, k in zip(mine, keep, strict=True) if k)
            self._top()[name] = _encoded(mods, numeric, bare, enc, values)
        return at + nargs

    # -- output ----------------------------------------------------------------------
    def render(self) -> str:
        """What the tool prints: its text, or the tree as JSON or XML (xo_finish)."""
        if self.style == "json":
            if self.pretty:
                return json.dumps(self.root, indent=2) + "\n"
            return json.dumps(self.root) + "\n"
        if self.style == "xml":
            return _xml(self.root, self.pretty, 0)
        return "".join(self.text)

    def finish(self, ctx: Context) -> None:
        ctx.out.write(self.render())


def _xml(node: dict[str, object], pretty: bool, depth: int) -> str:
    out: list[str] = []
    pad = "  " * depth if pretty else ""
    nl = "\n" if pretty else ""
    for key, value in node.items():
        if key == "__version":
            continue
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, dict):
                out.append(f"{pad}<{key}>{nl}{_xml(item, pretty, depth + 1)}{pad}</{key}>{nl}")
            else:
                text = ("true" if item else "false") if isinstance(item, bool) else str(item)
                out.append(f"{pad}<{key}>{escape(text)}</{key}>{nl}")
    text = "".join(out)
    return text + "\n" if depth == 0 and not pretty and text else text


def text_of(fmt: str, *args: object) -> str:
    """The text `fmt` prints (a one-off xo_emit in text style)."""
    xo = Xo()
    xo.emit(fmt, *args)
    return "".join(xo.text)
