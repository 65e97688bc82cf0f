"""Text-format config files, read as TF Serving reads them.

TF Serving parses every config file (model config, batching parameters, monitoring, SSL,
platform config) with ``ParseProtoTextFile``: protobuf's C++ ``TextFormat::ParseFromString``,
and on failure the status ``INVALID_ARGUMENT: Invalid protobuf file: '<path>'``. Before that,
the C++ parser logs each problem to stderr as
``Error parsing text-format <message type>: <line>:<column>: <reason>``.

``parse_text_proto`` is the one place Verso does this. Python's ``text_format.Parse`` decides
whether a text parses and fills the message; when it fails, ``cpp_parse_errors`` replays the
text through a port of the C++ tokenizer and parser (protobuf's ``io/tokenizer.cc`` and
``text_format.cc``) to find the lines C++ logs. The two parsers differ in where they point and
in their wording: Python names the unknown field's own position, C++ the token after it
(``name: 1`` with an unknown ``name`` is ``1:5`` in C++); Python counts characters, C++ bytes
and tab stops of 8; Python says ``Expected "}".`` at the end of input, C++ ``Expected
identifier, got: ``. Only when the port finds nothing wrong (Python rejected something C++
accepts) is Python's own position and reason used, in C++'s ``line:col: reason`` form.

C++ also logs ``Warning parsing text-format`` lines (deprecated fields) and accepts a few texts
Python rejects and the other way round (C++ refuses a singular message field given twice,
Python merges it); neither is reproduced: Python's verdict stands.
"""

from __future__ import annotations

import math
import re
import struct
from typing import Optional

from google.protobuf import descriptor_pb2, text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from protos.errors import Code, ServingError


class TextProtoError(ServingError):
    """An unparsable config file: TF Serving's status ``INVALID_ARGUMENT: Invalid protobuf
    file: '<path>'``; ``errors`` are protobuf's C++ log lines (``Error parsing text-format
    ...``), at least one. ``str()`` is the status followed by those lines, for a log line."""

    def __init__(self, path: str, errors: list[str]):
        super().__init__(Code.INVALID_ARGUMENT, f"Invalid protobuf file: '{path}'")
        self.path = path
        self.errors = tuple(errors)

    @property
    def status(self) -> str:
        """The status as TF Serving prints it: ``INVALID_ARGUMENT: Invalid protobuf file: '<path>'``."""
        return ServingError.__str__(self)

    def __str__(self) -> str:
        return "; ".join((self.status, *self.errors))


def parse_text_proto(text: str, message, path: str, *, descriptor_pool=None):
    """Parse ``text`` into ``message`` (a new, empty message) and return it; raise
    ``TextProtoError`` for ``path`` when it does not parse. ``descriptor_pool`` resolves the
    types named in ``google.protobuf.Any`` expansions (``[type.googleapis.com/pkg.Type] {...}``)."""
    try:
        text_format.Parse(text, message, descriptor_pool=descriptor_pool)
    except text_format.ParseError as e:
        pool = descriptor_pool or message.DESCRIPTOR.file.pool
        try:
            errors = cpp_parse_errors(text.encode("utf-8"), message.DESCRIPTOR, pool)
        except RecursionError:  # nesting deeper than Python's stack: C++ has no such limit
            errors = []
        raise TextProtoError(path, errors or [_from_python(e, message.DESCRIPTOR.full_name)]) from None
    return message


def _from_python(e: text_format.ParseError, type_name: str) -> str:
    """Python's error in C++'s form: ``line:col : 'source line': reason`` -> ``line:col: reason``."""
    reason = re.sub(r"^\d+(:\d+)? : ", "", str(e))
    reason = re.sub(r"^'.*?': ", "", reason)  # Python quotes the source line; C++ never does
    if e.GetLine() is None:
        return f"Error parsing text-format {type_name}: {reason}"
    return f"Error parsing text-format {type_name}: {e.GetLine()}:{e.GetColumn() or 0}: {reason}"


def cpp_parse_errors(data: bytes, descriptor: Descriptor, pool) -> list[str]:
    """The lines protobuf's C++ ``TextFormat::ParseFromString`` logs for ``data`` parsed as
    ``descriptor`` (``[]`` when it parses): every tokenizer error, then the parser's error."""
    parser = _Parser(data, descriptor, pool)
    parser.parse()
    return [f"Error parsing text-format {descriptor.full_name}: {line + 1}:{col + 1}: {message}"
            for line, col, message in parser.errors]


# ---- io::Tokenizer ---------------------------------------------------------------------------
# A port of protobuf's src/google/protobuf/io/tokenizer.cc with TextFormat's settings: '#'
# comments, 'f' allowed after floats, a space required after numbers, no multi-line strings.
# It works on bytes: C++ columns count bytes, and a tab advances to the next multiple of 8.

START, END, IDENTIFIER, INTEGER, FLOAT, STRING, SYMBOL, WHITESPACE, URL_CHARS = range(9)

_WHITESPACE = frozenset(b" \n\t\r\v\f")
_UNPRINTABLE = frozenset(range(1, 0x20))
_DIGIT = frozenset(b"0123456789")
_OCTAL = frozenset(b"01234567")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_LETTER = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_ALNUM = _LETTER | _DIGIT
_ESCAPE = frozenset(b"abfnrtv\\?'\"")
_URL_CHAR = _ALNUM | frozenset(b"-.~!$&()*+,;=%/")


class _Token:
    __slots__ = ("type", "text", "line", "column", "end_column")

    def __init__(self, type_: int, text: bytes, line: int, column: int, end_column: int):
        self.type, self.text, self.line, self.column, self.end_column = type_, text, line, column, end_column


class _Tokenizer:
    def __init__(self, data: bytes, errors: list):
        self.data = data
        self.pos = 0
        self.line = 0
        self.column = 0
        self.errors = errors
        self.report_whitespace = False
        self.report_url_chars = False
        self.current = _Token(START, b"", 0, 0, 0)
        self.previous = self.current

    @property
    def eof(self) -> bool:
        return self.pos >= len(self.data)

    @property
    def char(self) -> int:
        return self.data[self.pos] if self.pos < len(self.data) else 0  # C++ reads '\0' at the end

    def _next_char(self) -> None:
        c = self.char
        if c == 0x0A:
            self.line += 1
            self.column = 0
        elif c == 0x09:
            self.column += 8 - self.column % 8
        else:
            self.column += 1
        self.pos += 1

    def _error(self, message: str, column: Optional[int] = None) -> None:
        self.errors.append((self.line, self.column if column is None else column, message))

    def _try(self, chars) -> bool:
        if not self.eof and self.char in chars:
            self._next_char()
            return True
        return False

    def _zero_or_more(self, chars) -> None:
        while self._try(chars):
            pass

    def _one_or_more(self, chars, error: str) -> None:
        if not self._try(chars):
            self._error(error)
        self._zero_or_more(chars)

    def next(self) -> bool:
        """Advance ``current`` to the next token; False (an END token) at the end of input."""
        self.previous = self.current
        while not self.eof:
            line, column, start = self.line, self.column, self.pos
            if self._try(_WHITESPACE):
                self._zero_or_more(_WHITESPACE)
                if self.report_whitespace:
                    self.current = _Token(WHITESPACE, self.data[start:self.pos], line, column, self.column)
                    return True
                continue
            if self._try(b"#"):
                while not self.eof and self.char != 0x0A:
                    self._next_char()
                self._try(b"\n")
                continue
            if self.char in _UNPRINTABLE or self.char == 0:
                self._error("Invalid control characters encountered in text.")
                self._next_char()
                while not self.eof and (self.char in _UNPRINTABLE or self.char == 0):
                    self._next_char()
                continue
            line, column, start = self.line, self.column, self.pos
            kind = self._token()
            self.current = _Token(kind, self.data[start:self.pos], line, column, self.column)
            return True
        self.current = _Token(END, b"", self.line, self.column, self.column)
        return False

    def _token(self) -> int:
        if self.report_url_chars:
            if self._try(_URL_CHAR):
                self._zero_or_more(_URL_CHAR)
                return URL_CHARS
            return self._symbol()
        if self._try(_LETTER):
            self._zero_or_more(_ALNUM)
            return IDENTIFIER
        if self._try(b"0"):
            return self._number(started_with_zero=True, started_with_dot=False)
        if self._try(b"."):
            if self._try(_DIGIT):
                p = self.previous
                if p.type == IDENTIFIER and p.line == self.line and p.end_column == self.column - 2:
                    self._error("Need space between identifier and decimal point.", self.column - 2)
                return self._number(started_with_zero=False, started_with_dot=True)
            return SYMBOL
        if self._try(_DIGIT):
            return self._number(started_with_zero=False, started_with_dot=False)
        for quote in (b'"', b"'"):
            if self._try(quote):
                self._string(quote[0])
                return STRING
        return self._symbol()

    def _symbol(self) -> int:
        if self.char & 0x80:
            self._error(f"Interpreting non ascii codepoint {self.char}.")
        self._next_char()
        return SYMBOL

    def _string(self, delimiter: int) -> None:
        while True:
            c = self.char
            if c == 0:
                self._error("Unexpected end of string.")
                return
            if c == 0x0A:
                self._error('Multiline strings are not allowed. Did you miss a "?.')
                return
            self._next_char()
            if c == 0x5C:  # backslash
                if self._try(_ESCAPE) or self._try(_OCTAL):
                    pass
                elif self._try(b"xX"):
                    if not self._try(_HEX):
                        self._error("Expected hex digits for escape sequence.")
                elif self._try(b"u"):
                    if not all(self._try(_HEX) for _ in range(4)):
                        self._error("Expected four hex digits for \\u escape sequence.")
                elif self._try(b"U"):
                    if not (self._try(b"0") and self._try(b"0") and self._try(b"01")
                            and all(self._try(_HEX) for _ in range(5))):
                        self._error("Expected eight hex digits up to 10ffff for \\U escape sequence")
                else:
                    self._error("Invalid escape sequence in string literal.")
            elif c == delimiter:
                return

    def _number(self, started_with_zero: bool, started_with_dot: bool) -> int:
        is_float = False
        if started_with_zero and self._try(b"xX"):
            self._one_or_more(_HEX, '"0x" must be followed by hex digits.')
        elif started_with_zero and self.char in _DIGIT:
            self._zero_or_more(_OCTAL)
            if self.char in _DIGIT:
                self._error("Numbers starting with leading zero must be in octal.")
                self._zero_or_more(_DIGIT)
        else:
            if started_with_dot:
                is_float = True
                self._zero_or_more(_DIGIT)
            else:
                self._zero_or_more(_DIGIT)
                if self._try(b"."):
                    is_float = True
                    self._zero_or_more(_DIGIT)
            if self._try(b"eE"):
                is_float = True
                self._try(b"-+")
                self._one_or_more(_DIGIT, '"e" must be followed by exponent.')
            if self._try(b"fF"):
                is_float = True
        if self.char in _LETTER:
            self._error("Need space between number and identifier.")
        elif self.char == ord("."):
            self._error("Already saw decimal point or exponent; can't have another one." if is_float
                        else "Hex and octal numbers must be integers.")
        return FLOAT if is_float else INTEGER


def _parse_integer(text: bytes, max_value: int) -> Optional[int]:
    """``Tokenizer::ParseInteger``: decimal, 0x hex or 0 octal; None when invalid or above max."""
    base, digits = 10, text
    if text[:1] == b"0":
        base, digits = (16, text[2:]) if text[1:2] in (b"x", b"X") else (8, text)
    value = 0
    for c in digits:
        digit = int(chr(c), 36) if chr(c).isalnum() and c < 0x80 else 36
        if digit >= base:
            return None
        value = value * base + digit
        if value >= 2**64:
            return None
    return value if value <= max_value else None


def _parse_float(text: bytes) -> float:
    t = text.decode("ascii").rstrip("fF")
    try:
        return float(t)
    except ValueError:  # "1e": the tokenizer reported it; C++'s strtod reads the "1"
        return float(re.match(r"[0-9.]*", t).group(0) or 0)


# ---- TextFormat::Parser::ParserImpl ----------------------------------------------------------
# A port of the parser in protobuf's src/google/protobuf/text_format.cc (TextFormat::Parser's
# defaults: no unknown fields, no field numbers, singular fields may not be given twice). It
# builds no message: it tracks only what the error checks need (which fields a message has).

_INT32_MAX, _UINT32_MAX, _INT64_MAX, _UINT64_MAX = 2**31 - 1, 2**32 - 1, 2**63 - 1, 2**64 - 1


class _Stop(Exception):
    """The parser reported its error and gives up, as C++'s ``DO(...)`` returning false."""


class _State:
    """What C++'s reflection would answer for one message being parsed: HasField, HasOneof."""

    def __init__(self):
        self.present: set[str] = set()
        self.oneofs: dict[str, str] = {}


def _text(token: _Token) -> str:
    return token.text.decode("utf-8", "replace")


class _Parser:
    def __init__(self, data: bytes, descriptor: Descriptor, pool):
        self.errors: list[tuple[int, int, str]] = []
        self.descriptor = descriptor
        self.pool = pool
        self.tok = _Tokenizer(data, self.errors)
        self.tok.next()

    # -- helpers (ParserImpl's names) --

    def error(self, message: str):
        self.errors.append((self.tok.current.line, self.tok.current.column, message))
        raise _Stop

    def looking_at(self, text: str) -> bool:
        return self.tok.current.text == text.encode()

    def looking_at_type(self, kind: int) -> bool:
        return self.tok.current.type == kind

    def try_consume(self, text: str) -> bool:
        if self.looking_at(text):
            self.tok.next()
            return True
        return False

    def consume(self, text: str) -> None:
        if not self.try_consume(text):
            self.error(f'Expected "{text}", found "{_text(self.tok.current)}".')

    def _before_whitespace(self, action, *args):
        self.tok.report_whitespace = True
        try:
            return action(*args)
        finally:
            self.tok.report_whitespace = False

    def try_consume_whitespace(self) -> None:
        if self.looking_at_type(WHITESPACE):
            self.tok.next()

    def consume_identifier(self) -> str:
        if self.looking_at_type(IDENTIFIER):
            name = _text(self.tok.current)
            self.tok.next()
            return name
        self.error(f"Expected identifier, got: {_text(self.tok.current)}")

    def consume_unsigned(self, max_value: int) -> int:
        if not self.looking_at_type(INTEGER):
            self.error(f"Expected integer, got: {_text(self.tok.current)}")
        value = _parse_integer(self.tok.current.text, max_value)
        if value is None:
            self.error(f"Integer out of range ({_text(self.tok.current)})")
        self.tok.next()
        return value

    def consume_signed(self, max_value: int) -> int:
        negative = self.try_consume("-")
        value = self.consume_unsigned(max_value + 1 if negative else max_value)
        return -value if negative else value

    def consume_double(self) -> float:
        negative = self.try_consume("-")
        t = self.tok.current
        if t.type == INTEGER:
            if re.match(rb"0[xX]|0[0-7]", t.text):
                self.error(f"Expect a decimal number, got: {_text(t)}")
            value = _parse_integer(t.text, _UINT64_MAX)
            value = float(value) if value is not None else _parse_float(t.text)
        elif t.type == FLOAT:
            value = _parse_float(t.text)
        elif t.type == IDENTIFIER:
            lower = _text(t).lower()
            if lower not in ("inf", "infinity", "nan"):
                self.error(f"Expected double, got: {lower}")
            value = math.nan if lower == "nan" else math.inf
        else:
            self.error(f"Expected double, got: {_text(t)}")
        self.tok.next()
        return -value if negative else value

    def consume_string(self) -> bytes:
        if not self.looking_at_type(STRING):
            self.error(f"Expected string, got: {_text(self.tok.current)}")
        content = b""
        while self.looking_at_type(STRING):
            content += self.tok.current.text[1:-1]  # every escape stands for at least one byte
            self.tok.next()
        return content

    # -- the grammar --

    def parse(self) -> None:
        try:
            state = _State()
            while not self.looking_at_type(END):
                self.consume_field(self.descriptor, state)
        except _Stop:
            pass

    def consume_message(self, descriptor: Descriptor, delimiter: str) -> None:
        state = _State()
        while not self.looking_at(">") and not self.looking_at("}"):
            self.consume_field(descriptor, state)
        self.consume(delimiter)

    def consume_message_delimiter(self) -> str:
        if self.try_consume("<"):
            return ">"
        self.consume("{")
        return "}"

    def consume_field(self, descriptor: Descriptor, state: _State) -> None:
        if descriptor.full_name == "google.protobuf.Any" and self.looking_at("["):
            self.consume_any(state)
            return
        field: Optional[FieldDescriptor] = None
        reserved = False
        if self.looking_at("["):
            name, prefix = self.consume_type_url_or_name()
            if prefix:
                self.error('Extension name contains "/"')
            self.try_consume_whitespace()
            try:
                field = self.pool.FindExtensionByName(name)
            except KeyError:
                field = None
            if field is not None and field.containing_type is not descriptor:
                field = None
            if field is None:
                self.error(f'Extension "{name}" is not defined or is not an extension of '
                           f'"{descriptor.full_name}".')
        else:
            name = self._before_whitespace(self.consume_identifier)
            self.try_consume_whitespace()
            field = descriptor.fields_by_name.get(name)
            if field is None:
                lower = descriptor.fields_by_name.get(name.lower())  # group-like fields only
                if lower is not None and lower.type == FieldDescriptor.TYPE_GROUP and lower.message_type.name == name:
                    field = lower
            if field is None:
                reserved = name in _reserved_names(descriptor)
                if not reserved:
                    self.error(f'Message type "{descriptor.full_name}" has no field named "{name}".')
        if field is None:  # a reserved name: C++ skips it
            if self._before_whitespace(self.try_consume, ":"):
                self.try_consume_whitespace()
                if not self.looking_at("{") and not self.looking_at("<"):
                    self.skip_field_value()
                    self._separator()
                    return
            self.skip_field_message()
            self._separator()
            return

        if not field.is_repeated:
            if field.name in state.present:
                self.error(f'Non-repeated field "{name}" is specified multiple times.')
            oneof = field.containing_oneof
            if oneof is not None and oneof.name in state.oneofs:
                self.error(f'Field "{name}" is specified along with field "{state.oneofs[oneof.name]}", '
                           f'another member of oneof "{oneof.name}".')
        is_message = field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE
        if is_message:
            if self._before_whitespace(self.try_consume, ":"):
                self.try_consume_whitespace()
        else:
            self._before_whitespace(self.consume, ":")
            self.try_consume_whitespace()

        if field.is_repeated and self.try_consume("["):
            if not self.try_consume("]"):
                while True:
                    if is_message:
                        self.consume_field_message(field)
                    else:
                        self.consume_field_value(field)
                    if self.try_consume("]"):
                        break
                    self.consume(",")
        elif is_message:
            self.consume_field_message(field)
            self._mark(state, field, True)
        else:
            self._mark(state, field, self.consume_field_value(field))
        self._separator()

    def _separator(self) -> None:
        # For historical reasons, fields may optionally be separated by commas or semicolons.
        self.try_consume(";") or self.try_consume(",")

    @staticmethod
    def _mark(state: _State, field: FieldDescriptor, nondefault: bool) -> None:
        """Record what C++'s HasField answers after the assignment: with explicit presence
        (messages, oneof members, proto2, map entries), set; a proto3 scalar only when not
        the default value."""
        explicit = (field.has_presence or field.containing_oneof is not None
                    or field.containing_type.GetOptions().map_entry)
        if explicit or nondefault:
            state.present.add(field.name)
            if field.containing_oneof is not None:
                state.oneofs[field.containing_oneof.name] = field.name

    def consume_field_message(self, field: FieldDescriptor) -> None:
        delimiter = self.consume_message_delimiter()
        self.consume_message(field.message_type, delimiter)

    def consume_field_value(self, field: FieldDescriptor) -> bool:
        """Consume one scalar value; True when it is not the field's default (proto3 presence)."""
        cpp = field.cpp_type
        if cpp == FieldDescriptor.CPPTYPE_INT32:
            return self.consume_signed(_INT32_MAX) != 0
        if cpp == FieldDescriptor.CPPTYPE_UINT32:
            return self.consume_unsigned(_UINT32_MAX) != 0
        if cpp == FieldDescriptor.CPPTYPE_INT64:
            return self.consume_signed(_INT64_MAX) != 0
        if cpp == FieldDescriptor.CPPTYPE_UINT64:
            return self.consume_unsigned(_UINT64_MAX) != 0
        if cpp in (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE):
            value = self.consume_double()
            if cpp == FieldDescriptor.CPPTYPE_FLOAT:
                value = _to_float32(value)
            return struct.pack("<d", value) != bytes(8)  # -0.0 counts as set, as C++'s bit check
        if cpp == FieldDescriptor.CPPTYPE_STRING:
            return self.consume_string() != b""
        if cpp == FieldDescriptor.CPPTYPE_BOOL:
            if self.looking_at_type(INTEGER):
                return self.consume_unsigned(1) == 1
            value = self.consume_identifier()
            if value in ("true", "True", "t"):
                return True
            if value in ("false", "False", "f"):
                return False
            self.error(f'Invalid value for boolean field "{field.name}". Value: "{value}".')
        # CPPTYPE_ENUM
        enum_type = field.enum_type
        if self.looking_at_type(IDENTIFIER):
            value = self.consume_identifier()
            found = enum_type.values_by_name.get(value)
            if found is None:
                self.error(f'Unknown enumeration value of "{value}" for field "{field.name}".')
            return found.number != 0
        if self.looking_at("-") or self.looking_at_type(INTEGER):
            number = self.consume_signed(_INT32_MAX)
            if number not in enum_type.values_by_number and getattr(enum_type, "is_closed", False):
                self.error(f'Unknown enumeration value of "{number}" for field "{field.name}".')
            return number != 0
        self.error(f"Expected integer or identifier, got: {_text(self.tok.current)}")

    def consume_type_url_or_name(self) -> tuple[str, str]:
        """``[prefix/full.Type]`` or ``[full.Type]`` -> (full type name, prefix with its '/')."""
        self.tok.report_url_chars = True
        self.consume("[")
        text = ""
        while self.looking_at_type(URL_CHARS):
            text += _text(self.tok.current)
            self.tok.next()
        self.tok.report_url_chars = False
        self._before_whitespace(self.consume, "]")
        prefix, slash, name = text.rpartition("/")
        if slash:
            prefix += "/"
            if prefix == "/":
                self.error("Type URL prefix is empty")
            if prefix.startswith("/"):
                self.error('Type URL starts with "/"')
            bad = re.search(r"%(?![0-9a-fA-F]{2})", prefix)
            if bad:
                self.error(f'Invalid percent encode, got: "{prefix[bad.start():bad.start() + 3]}"')
        for identifier in name.split("."):
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", identifier):
                self.error(f'Invalid identifier in type name, got: "{identifier}"')
        return name, prefix

    def consume_any(self, state: _State) -> None:
        name, prefix = self.consume_type_url_or_name()
        if not prefix:
            self.error("Type URL prefix is missing")
        self.try_consume_whitespace()
        if self._before_whitespace(self.try_consume, ":"):
            self.try_consume_whitespace()
        try:
            value_type = self.pool.FindMessageTypeByName(name)
        except KeyError:
            self.error(f'Could not find type "{prefix}{name}" stored in google.protobuf.Any.')
        delimiter = self.consume_message_delimiter()
        self.consume_message(value_type, delimiter)
        if "type_url" in state.present or "value" in state.present:
            self.error("Non-repeated Any specified multiple times.")
        state.present.update(("type_url", "value"))
        self._separator()

    def skip_field(self) -> None:
        if self.looking_at("["):
            self.consume_type_url_or_name()
        else:
            self._before_whitespace(self.consume_identifier)
        self.try_consume_whitespace()
        if self._before_whitespace(self.try_consume, ":"):
            self.try_consume_whitespace()
            if not self.looking_at("{") and not self.looking_at("<"):
                self.skip_field_value()
            else:
                self.skip_field_message()
        else:
            self.skip_field_message()
        self._separator()

    def skip_field_message(self) -> None:
        delimiter = self.consume_message_delimiter()
        while not self.looking_at(">") and not self.looking_at("}"):
            self.skip_field()
        self.consume(delimiter)

    def skip_field_value(self) -> None:
        if self.looking_at_type(STRING):
            while self.looking_at_type(STRING):
                self.tok.next()
            return
        if self.try_consume("["):
            if not self.try_consume("]"):
                while True:
                    if not self.looking_at("{") and not self.looking_at("<"):
                        self.skip_field_value()
                    else:
                        self.skip_field_message()
                    if self.try_consume("]"):
                        break
                    self.consume(",")
            return
        has_minus = self.try_consume("-")
        if self.tok.current.type not in (INTEGER, FLOAT, IDENTIFIER):
            self.error(f"Cannot skip field value, unexpected token: {_text(self.tok.current)}")
        if has_minus and self.looking_at_type(IDENTIFIER):
            lower = _text(self.tok.current).lower()
            if lower not in ("inf", "infinity", "nan"):
                self.error(f"Invalid float number: {lower}")
        self.tok.next()


def _reserved_names(descriptor: Descriptor) -> frozenset[str]:
    proto = descriptor_pb2.DescriptorProto()
    descriptor.CopyToProto(proto)
    return frozenset(proto.reserved_name)


def _to_float32(value: float) -> float:
    """``io::SafeDoubleToFloat``: out-of-range doubles become infinities."""
    try:
        return struct.unpack("<f", struct.pack("<f", value))[0]
    except OverflowError:
        return math.copysign(math.inf, value)
