"""A small reader for libConfuse configuration syntax (what OOR's oor.conf uses).

    section = parse(text)
    section.get("operating-mode")            # -> Value or None
    for db in section.sections("database-mapping"): ...

The grammar (libConfuse's, as far as configuration files use it):

    body    := (option | section | call)*
    option  := NAME ("=" | "+=") (scalar | list)
    list    := "{" [scalar ("," scalar)*] "}"      (commas optional here, newlines suffice)
    section := NAME [TITLE] "{" body "}"
    call    := NAME "(" args ")"                    (e.g. include("x"): reported, not run)
    scalar  := "double quoted" | 'single quoted' | unquoted-word

Comments: `#` and `//` to the end of the line, `/* ... */`. Option names are
case-insensitive (OOR initialises libConfuse with CFGF_NOCASE), so they are
lower-cased here; values keep their case. Values stay strings: what a value
means (int, bool, address) is the caller's business. Only syntax errors raise
ConfuseError, with the line.
"""
from __future__ import annotations

from dataclasses import dataclass, field

_PUNCT = "{}=(),"
# An unquoted word ends at white space, punctuation, a quote, or a comment start.
_WORD_END = set(" \t\r\n\"'#") | set(_PUNCT)


class ConfuseError(ValueError):
    def __init__(self, line: int, message: str):
        self.line = line
        super().__init__(f"line {line}: {message}")


@dataclass(frozen=True)
class Value:
    """A scalar, or a list of scalars (`key = { a, b }`)."""
    text: str | tuple[str, ...]
    line: int

    @property
    def is_list(self) -> bool:
        return isinstance(self.text, tuple)

    def items(self) -> tuple[str, ...]:
        return self.text if isinstance(self.text, tuple) else (self.text,)


@dataclass
class Section:
    name: str
    line: int
    title: str | None = None
    # In file order: (name, Value | Section). Repeated options keep every occurrence.
    entries: list[tuple[str, "Value | Section"]] = field(default_factory=list)

    def get(self, name: str) -> Value | None:
        """The last value given to option `name` (libConfuse keeps the last)."""
        found = None
        for key, item in self.entries:
            if key == name and isinstance(item, Value):
                found = item
        return found

    def sections(self, name: str) -> list["Section"]:
        return [item for key, item in self.entries if key == name and isinstance(item, Section)]

    def names(self) -> list[tuple[str, int]]:
        return [(key, item.line) for key, item in self.entries]


@dataclass(frozen=True)
class _Tok:
    kind: str          # one of _PUNCT, "+=", "str" (quoted), "word"
    text: str
    line: int


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    i, line, n = 0, 1, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c in " \t\r\f;":
            i += 1
        elif c == "#" or text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise ConfuseError(line, "unterminated /* comment")
            line += text.count("\n", i, end)
            i = end + 2
        elif text.startswith("+=", i):
            out.append(_Tok("+=", "+=", line))
            i += 2
        elif c in _PUNCT:
            out.append(_Tok(c, c, line))
            i += 1
        elif c == '"':
            start, buf = line, []
            i += 1
            while True:
                if i >= n:
                    raise ConfuseError(start, "unterminated string")
                c = text[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\" and i + 1 < n:
                    nxt = text[i + 1]
                    buf.append({"n": "\n", "t": "\t", "r": "\r", "f": "\f", "b": "\b"}.get(nxt, nxt))
                    if nxt == "\n":
                        line += 1
                    i += 2
                    continue
                if c == "\n":
                    line += 1
                buf.append(c)
                i += 1
            out.append(_Tok("str", "".join(buf), start))
        elif c == "'":
            # single quotes: no escapes except \' and \\ (libConfuse)
            start, buf = line, []
            i += 1
            while True:
                if i >= n:
                    raise ConfuseError(start, "unterminated string")
                c = text[i]
                if c == "'":
                    i += 1
                    break
                if c == "\\" and i + 1 < n and text[i + 1] in "'\\":
                    buf.append(text[i + 1])
                    i += 2
                    continue
                if c == "\n":
                    line += 1
                buf.append(c)
                i += 1
            out.append(_Tok("str", "".join(buf), start))
        else:
            start = i
            while i < n and text[i] not in _WORD_END and not text.startswith("//", i) \
                    and not text.startswith("/*", i) and not text.startswith("+=", i):
                i += 1
            out.append(_Tok("word", text[start:i], line))
    return out


class _Parser:
    def __init__(self, toks: list[_Tok]):
        self.toks = toks
        self.i = 0

    def peek(self, ahead: int = 0) -> _Tok | None:
        j = self.i + ahead
        return self.toks[j] if j < len(self.toks) else None

    def take(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            last = self.toks[-1].line if self.toks else 1
            raise ConfuseError(last, "unexpected end of file")
        self.i += 1
        return tok

    def body(self, into: Section, closing: bool) -> None:
        while True:
            tok = self.peek()
            if tok is None:
                if closing:
                    raise ConfuseError(into.line, f"section {into.name!r} is not closed with '}}'")
                return
            if tok.kind == "}":
                if not closing:
                    raise ConfuseError(tok.line, "'}' without an open section")
                self.i += 1
                return
            if tok.kind == ",":            # libConfuse tolerates separators between options
                self.i += 1
                continue
            if tok.kind not in ("word", "str"):
                raise ConfuseError(tok.line, f"expected an option name, found {tok.text!r}")
            self.i += 1
            name = tok.text.lower()
            nxt = self.take()
            if nxt.kind in ("=", "+="):
                into.entries.append((name, self.value(nxt.line)))
            elif nxt.kind == "{":
                sec = Section(name, tok.line)
                self.body(sec, closing=True)
                into.entries.append((name, sec))
            elif nxt.kind in ("word", "str") and (self.peek() or nxt).kind == "{":
                self.i += 1
                sec = Section(name, tok.line, title=nxt.text)
                self.body(sec, closing=True)
                into.entries.append((name, sec))
            elif nxt.kind == "(":
                args = []
                while (t := self.take()).kind != ")":
                    if t.kind in ("word", "str"):
                        args.append(t.text)
                into.entries.append((f"{name}()", Value(tuple(args), tok.line)))
            else:
                raise ConfuseError(nxt.line, f"after {tok.text!r} expected '=' or '{{', found {nxt.text!r}")

    def value(self, line: int) -> Value:
        tok = self.take()
        if tok.kind in ("word", "str"):
            return Value(tok.text, tok.line)
        if tok.kind != "{":
            raise ConfuseError(tok.line, f"expected a value, found {tok.text!r}")
        items: list[str] = []
        while True:
            t = self.take()
            if t.kind == "}":
                return Value(tuple(items), tok.line)
            if t.kind == ",":
                continue
            if t.kind not in ("word", "str"):
                raise ConfuseError(t.line, f"expected a list item, found {t.text!r}")
            items.append(t.text)


def parse(text: str) -> Section:
    """The whole file as an unnamed root section. Raises ConfuseError."""
    root = Section("", 1)
    _Parser(_tokens(text)).body(root, closing=False)
    return root
