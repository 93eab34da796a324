"""JSON from untrusted sources: bounded parsing and a small declarative schema.

Everything that arrives from the network or a file as JSON goes through
`parse` (or `loads` then `Schema.validate`): a document either comes out as
plain dicts, lists, strings, numbers, booleans and None that match the schema,
or one `JSONError` comes out, naming where (the JSON path, or the byte offset
for a syntax problem) and why. Nothing else is raised: no RecursionError,
OverflowError, UnicodeError, TypeError or MemoryError.

Before `json.loads` runs, one linear, non-recursive scan checks the size, the
nesting depth (so the recursive C parser can never recurse deeper than
`Limits.max_depth`) and the string escapes (no lone UTF-16 surrogates, which
would fail later when the text is encoded). During parsing, integers longer
than `Limits.max_int_digits` digits (a 400-digit integer raises OverflowError
the moment someone converts it to a float), non-finite numbers (``NaN``,
``Infinity``, ``1e999``) and repeated keys in one object are refused.

A schema is built once from a few classes and then validates many documents::

    from fedcore import safejson as sj

    CLIENT_ID = r"[A-Za-z0-9_.-]{1,64}"
    PRESENCE = sj.Object(
        {
            "v": sj.Int(1, 1),
            "status": sj.Enum("online", "offline"),
            "client": sj.Str(pattern=CLIENT_ID),
            "time": sj.Float(0, 1e11),
        },
        optional={
            "capabilities": sj.Object({"samples": sj.Int(0, 10**9)}, unknown="drop"),
            "last_update": sj.Nullable(sj.Object({
                "round": sj.Int(0, 10**6),
                "train_s": sj.Float(0, 86400),
                "bytes": sj.Int(0, 1 << 31),
            })),
        },
    )
    LIMITS = sj.Limits(max_bytes=64 << 10, max_depth=8)

    try:
        presence = sj.parse(payload, PRESENCE, LIMITS)
    except sj.JSONError as error:       # "$.last_update.train_s: expected a number ..."
        log.warning("presence on %s ignored: %s", topic, error)

The result is a fresh value: `Float` turns integers into floats, an `Object`
with ``unknown="drop"`` leaves unknown keys out (newer peers may send more), and
``unknown="keep"`` passes them through unchecked (but still within the parse
limits). Other building blocks: `Bool`, `List(item, max_len=...)`,
`Map(values, keys=Str(...))` for objects with free keys (metrics by name),
`Tagged("op", {"deflate": Object({}), ...})` for objects whose kind is named by
one key, and `Any()` for free JSON. A schema's own nesting is fixed by the
code, so validating never recurses deeper than the schema itself.

Memory-file and other file headers use the same two calls on the bytes they
read; callers turn `JSONError` into their own error type with ``str(error)``.
"""

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any as AnyType
from typing import Callable, Dict, Mapping, Optional, Set, Tuple, Union
from typing import List as ListType

import numpy as np

from .errors import JSONError

__all__ = [
    "JSONError",
    "Limits",
    "loads",
    "parse",
    "Schema",
    "Any",
    "Bool",
    "Int",
    "Float",
    "Str",
    "Enum",
    "List",
    "Object",
    "Map",
    "Tagged",
    "Nullable",
    "MAX_SAFE_INT",
]

MAX_SAFE_INT = (1 << 53) - 1  # the largest integer every JSON peer reads exactly
_DEPTH_CEILING = 200  # far below Python's recursion limit, whatever the caller's stack
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")

Raw = Union[bytes, bytearray, memoryview, str]
Path = Union[str, tuple]  # "$", or (parent path, key or index): see _render


@dataclass(frozen=True)
class Limits:
    """What a document may be: at most `max_bytes` bytes of UTF-8, nested at
    most `max_depth` arrays/objects deep (a scalar is depth 0, ``[]`` depth 1),
    integers of at most `max_int_digits` digits (20 covers every 64-bit value).

    The scan before parsing holds at most about 20 bytes of numpy arrays per
    byte of the document, so `max_bytes` also bounds its memory."""

    max_bytes: int = 64 << 10
    max_depth: int = 16
    max_int_digits: int = 20

    def __post_init__(self):
        for name, low, high in (("max_bytes", 1, 1 << 31), ("max_depth", 1, _DEPTH_CEILING),
                                ("max_int_digits", 1, 4000)):
            value = getattr(self, name)
            if type(value) is not int or not low <= value <= high:
                raise ValueError("Limits.%s must be an integer in %d..%d, got %r" % (name, low, high, value))


DEFAULT_LIMITS = Limits()


# ---------------------------------------------------------------- parsing


class _Refused(Exception):
    """Raised inside json.loads hooks; carries the reason and the offending token."""

    def __init__(self, reason: str, token: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.token = token


def loads(raw: Raw, limits: Limits = DEFAULT_LIMITS) -> AnyType:
    """Parse one JSON document within `limits`; raises JSONError, nothing else."""
    data, text = _as_utf8(raw, limits)
    _scan(data, limits)
    # Integers are checked one by one only when a run of digits that long exists at all (in a
    # string or not): most documents have none, and the check costs a Python call an integer.
    long_digits = b"1" * (limits.max_int_digits + 1) in data.translate(_DIGITS_AS_ONES)
    try:
        return _decoder(limits.max_int_digits if long_digits else None).decode(text)
    except _Refused as refused:
        raise JSONError(refused.reason, offset=_locate(data, refused.token)) from None
    except json.JSONDecodeError as error:
        offset = len(text[: error.pos].encode("utf-8"))
        raise JSONError("not valid JSON: %s" % error.msg, offset=offset) from None
    except RecursionError:  # only if the caller's own stack is already near Python's limit
        raise JSONError("nested too deeply for this caller's stack") from None


# Each ASCII digit as b"1", every other byte as b"0": a run of digits is then a substring search,
# ten times faster than a regular expression (UTF-8 never puts an ASCII byte inside a character).
_DIGITS_AS_ONES = bytes(0x31 if 0x30 <= b <= 0x39 else 0x30 for b in range(256))


@lru_cache(maxsize=8)
def _decoder(max_int_digits: Optional[int]) -> json.JSONDecoder:
    """A decoder with the refusing hooks (built once: json.loads builds one a call), checking
    integers' lengths when `max_int_digits` is given."""

    def parse_int(token: str) -> int:
        digits = len(token) - token.startswith("-")
        if max_int_digits is not None and digits > max_int_digits:
            raise _Refused("an integer of %d digits exceeds the limit of %d digits" % (digits, max_int_digits), token)
        return int(token)

    return json.JSONDecoder(parse_int=None if max_int_digits is None else parse_int, parse_float=_finite_float,
                            parse_constant=_no_constant, object_pairs_hook=_unique_keys)


def _finite_float(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise _Refused("the number %s is beyond the float64 range" % _clip(token), token)
    return value


def _no_constant(token: str):
    raise _Refused("%s is not JSON (no NaN or Infinity)" % token, token)


def _unique_keys(pairs: ListType[Tuple[str, AnyType]]) -> Dict[str, AnyType]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise _Refused("an object repeats the key %s" % _brief(key))
            seen.add(key)
    return result


def parse(raw: Raw, schema: "Schema", limits: Limits = DEFAULT_LIMITS) -> AnyType:
    """`loads` then `schema.validate`: the checked value, or one JSONError."""
    return schema.validate(loads(raw, limits))


def _as_utf8(raw: Raw, limits: Limits) -> Tuple[bytes, str]:
    """The document's UTF-8 bytes and its text, checked for size and encoding."""
    text: Optional[str] = None
    if isinstance(raw, str):
        if len(raw) > limits.max_bytes:
            raise JSONError("document of at least %d bytes exceeds the limit of %d" % (len(raw), limits.max_bytes))
        try:
            data, text = raw.encode("utf-8"), raw
        except UnicodeEncodeError as error:
            raise JSONError("character %d is a lone surrogate, not Unicode text" % error.start) from None
    elif isinstance(raw, (bytes, bytearray, memoryview)):
        data = bytes(raw)
    else:
        raise JSONError("a JSON document is bytes or str, got %s" % type(raw).__name__)
    if len(data) > limits.max_bytes:
        raise JSONError("document of %d bytes exceeds the limit of %d" % (len(data), limits.max_bytes))
    try:
        return data, data.decode("utf-8") if text is None else text
    except UnicodeDecodeError as error:
        raise JSONError("not UTF-8 text (%s)" % error.reason, offset=error.start) from None


_SMALL_DOCUMENT = 4096  # bytes: below this counting brackets with bytes methods beats numpy's per-call cost
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_NOT_BRACKETS_OR_QUOTES = bytes(b for b in range(256) if b not in b'[]{}"')
_SQUARE_BRACKETS = bytes.maketrans(b"{}", b"[]")


def _scan(data: bytes, limits: Limits) -> None:
    """Refuse, without recursion, a document that nests deeper than the limit or
    whose strings escape a lone surrogate.

    A quote opens or closes a string unless an odd run of backslashes precedes
    it; that is how json.loads reads every prefix it accepts (it stops at the
    first byte that is not JSON), so it can never nest deeper than found here.
    """
    if len(data) <= _SMALL_DOCUMENT and b"\\" not in data:
        if data.count(b"[") + data.count(b"{") <= limits.max_depth:
            return  # no escape, and too few brackets (in strings or not) to nest beyond the limit
        # No backslash: every quote toggles a string, and no string escapes anything. The brackets
        # outside strings, all as [ and ]: each round takes away the innermost pairs, so balanced
        # brackets are gone after as many rounds as they nest deep (others go to the exact scan).
        brackets = data.translate(_SQUARE_BRACKETS, _NOT_BRACKETS_OR_QUOTES).replace(b'""', b"")
        if b'"' in brackets:  # a string holds a bracket (its quotes were not side by side): cut strings out
            brackets = b"".join(data.split(b'"')[0::2]).translate(_SQUARE_BRACKETS, _NOT_BRACKETS)
        for _ in range(limits.max_depth):
            if not brackets:
                return
            brackets = brackets.replace(b"[]", b"")
        if not brackets:
            return
    escaped, inside = _string_masks(data)  # one vectorised pass; also finds the offset of a refusal
    codes = np.frombuffer(data, dtype=np.uint8)
    step = ((codes == 0x5B) | (codes == 0x7B)).astype(np.int32) - ((codes == 0x5D) | (codes == 0x7D))
    step[inside] = 0
    depths = np.cumsum(step, dtype=np.int32)
    if depths.size and int(depths.max()) > limits.max_depth:
        offset = int(np.argmax(depths > limits.max_depth))
        raise JSONError("nested deeper than %d levels" % limits.max_depth, offset=offset)
    _check_surrogates(data, escaped, inside)


def _string_masks(data: bytes) -> Tuple[np.ndarray, np.ndarray]:
    """(escaped, inside): the bytes preceded by an odd run of backslashes, and
    the bytes inside string literals."""
    codes = np.frombuffer(data, dtype=np.uint8)
    count = codes.size
    positions = np.arange(count, dtype=np.int32)
    backslash = codes == 0x5C
    last_plain = np.maximum.accumulate(np.where(backslash, np.int32(-1), positions))  # last non-backslash <= i
    escaped = np.zeros(count, dtype=bool)
    escaped[1:] = (positions[:-1] - last_plain[:-1]) % 2 == 1
    del positions, last_plain  # bound the scan's memory: a few bytes per byte of input
    quote = (codes == 0x22) & ~escaped
    inside = np.cumsum(quote, dtype=np.int32) % 2 == 1
    return escaped, inside


def _check_surrogates(data: bytes, escaped: np.ndarray, inside: np.ndarray) -> None:
    """Every \\uD800-\\uDFFF escape in a string must be half of a high-low pair."""
    high: Set[int] = set()
    low: Set[int] = set()
    for match in _SURROGATE_ESCAPE.finditer(data):
        start = match.start()
        if inside[start] and not escaped[start]:
            (high if data[start + 3] in b"89abAB" else low).add(start)
    for start in sorted(high | low):
        paired = (start + 6 in low) if start in high else (start - 6 in high)
        if not paired:
            raise JSONError("a string escapes a lone UTF-16 surrogate", offset=start)


def _locate(data: bytes, token: str) -> Optional[int]:
    """Byte offset of the first `token` outside strings, when a token is known."""
    if not token:
        return None
    inside = _string_masks(data)[1]
    pattern = re.compile(rb"(?<![0-9.eE+\-A-Za-z])" + re.escape(token.encode("ascii")) + rb"(?![0-9.eE])")
    for match in pattern.finditer(data):
        if not inside[match.start()]:
            return match.start()
    return None


# ---------------------------------------------------------------- schemas


def _brief(value: AnyType, width: int = 40) -> str:
    """A short, safe rendering of a value for an error message."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int) and value.bit_length() > 128:
        return "an integer of about %d digits" % int(value.bit_length() * 0.30103 + 1)
    if isinstance(value, (int, float)):
        return _clip(repr(value), width)
    if isinstance(value, str):
        return _clip(json.dumps(value), width)
    if isinstance(value, (dict, list)):
        return "%s of %d item(s)" % ("an object" if isinstance(value, dict) else "a list", len(value))
    return type(value).__name__


def _clip(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _key_path(path: str, key: str) -> str:
    if _IDENTIFIER.match(key):
        return "%s.%s" % (path, key)
    return "%s[%s]" % (path, _clip(json.dumps(key), 40))


class _KeyOf:
    """A path step naming an object's key itself (not its value)."""

    __slots__ = ("key",)

    def __init__(self, key: str):
        self.key = key


def _render(path: "Path") -> str:
    """A path as text: validation passes (parent, step) tuples down and renders
    them only for an error, so a valid document costs no string formatting."""
    steps = []
    while isinstance(path, tuple):
        path, step = path
        steps.append(step)
    text = path
    for step in reversed(steps):
        if isinstance(step, int):
            text = "%s[%d]" % (text, step)
        elif isinstance(step, _KeyOf):
            text = "%s{key %s}" % (text, _brief(step.key))
        else:
            text = _key_path(text, step)
    return text


def _range_text(low: Optional[float], high: Optional[float]) -> str:
    if low is None and high is None:
        return ""
    if high is None:
        return " >= %s" % (low,)
    if low is None:
        return " <= %s" % (high,)
    return " in %s..%s" % (low, high)


class Schema:
    """What one JSON value must be. `validate` returns the checked value (a new
    container for objects and lists) or raises JSONError naming its path."""

    expected = "a JSON value"
    _fast: Optional[Callable[[AnyType], AnyType]] = None  # the compiled check, built at first use

    def validate(self, value: AnyType, path: str = "$") -> AnyType:
        fast = self._fast
        if fast is None:
            fast = self._fast = _compile(self)
        try:
            return fast(value)
        except Exception:  # _Invalid, or whatever a check met: the checks below say what and where
            pass
        return self._check(value, path)

    def _check(self, value: AnyType, path: Path) -> AnyType:
        raise NotImplementedError

    def _fail(self, path: Path, value: AnyType, expected: Optional[str] = None) -> "JSONError":
        return JSONError("expected %s, got %s" % (expected or self.expected, _brief(value)), path=_render(path))


class Any(Schema):
    """Any JSON value (its size and depth are bounded by the parse limits)."""

    def _check(self, value: AnyType, path: Path) -> AnyType:
        return value


class Bool(Schema):
    expected = "true or false"

    def _check(self, value: AnyType, path: Path) -> bool:
        if type(value) is not bool:
            raise self._fail(path, value)
        return value


class Int(Schema):
    """An integer (never a boolean, never 1.0) in [min, max]."""

    def __init__(self, min: Optional[int] = None, max: Optional[int] = None):
        self.min, self.max = min, max
        self._low = -math.inf if min is None else min  # one chained comparison a value
        self._high = math.inf if max is None else max
        self.expected = "an integer" + _range_text(min, max)

    def _check(self, value: AnyType, path: Path) -> int:
        if type(value) is not int or not self._low <= value <= self._high:
            raise self._fail(path, value)
        return value


class Float(Schema):
    """A finite number in [min, max]; integers are accepted and become floats."""

    def __init__(self, min: Optional[float] = None, max: Optional[float] = None):
        self.min, self.max = min, max
        self.expected = "a finite number" + _range_text(min, max)

    def _check(self, value: AnyType, path: Path) -> float:
        if type(value) not in (int, float):
            raise self._fail(path, value)
        try:
            number = float(value)
        except OverflowError:
            raise self._fail(path, value) from None
        if not math.isfinite(number):
            raise self._fail(path, value)
        if (self.min is not None and number < self.min) or (self.max is not None and number > self.max):
            raise self._fail(path, value)
        return number


class Str(Schema):
    """A string of min_len..max_len characters, optionally matching `pattern` whole."""

    def __init__(self, min_len: int = 0, max_len: int = 256, pattern: Optional[str] = None):
        self.min_len, self.max_len = min_len, max_len
        self.pattern = re.compile(pattern) if pattern is not None else None
        self.expected = "a string of %d..%d characters" % (min_len, max_len)
        if pattern is not None:
            self.expected += " matching %s" % pattern

    def _check(self, value: AnyType, path: Path) -> str:
        if type(value) is not str or not self.min_len <= len(value) <= self.max_len:
            raise self._fail(path, value)
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise self._fail(path, value)
        return value


class Enum(Schema):
    """One of the given strings / integers / booleans (compared with their type)."""

    def __init__(self, *choices: Union[str, int, bool, None]):
        if not choices:
            raise ValueError("Enum needs at least one choice")
        self.choices = tuple((type(c), c) for c in choices)
        self.expected = "one of " + ", ".join(json.dumps(c) for c in choices)

    def _check(self, value: AnyType, path: Path) -> AnyType:
        if type(value) not in (str, int, bool, type(None)) or (type(value), value) not in self.choices:
            raise self._fail(path, value)
        return value


class Nullable(Schema):
    """null, or a value of `schema`."""

    def __init__(self, schema: Schema):
        self.schema = schema
        self.expected = "null or " + schema.expected

    def _check(self, value: AnyType, path: Path) -> AnyType:
        return None if value is None else self.schema._check(value, path)


class List(Schema):
    """A list of min_len..max_len items, each of `item`."""

    def __init__(self, item: Schema, min_len: int = 0, max_len: Optional[int] = None):
        self.item, self.min_len, self.max_len = item, min_len, max_len
        self.expected = "a list"

    def _check(self, value: AnyType, path: Path) -> ListType[AnyType]:
        if type(value) is not list:
            raise self._fail(path, value)
        if len(value) < self.min_len or (self.max_len is not None and len(value) > self.max_len):
            bound = "%d..%s" % (self.min_len, "" if self.max_len is None else self.max_len)
            raise JSONError("expected a list of %s items, got %d" % (bound, len(value)), path=_render(path))
        return [self.item._check(item, (path, index)) for index, item in enumerate(value)]


_UNKNOWN_POLICIES = ("reject", "drop", "keep")


class Object(Schema):
    """An object with the `fields` (all required), any of `optional`, and
    unknown keys rejected (default), dropped from the result, or kept as they are."""

    expected = "an object"

    def __init__(self, fields: Mapping[str, Schema], optional: Optional[Mapping[str, Schema]] = None,
                 unknown: str = "reject"):
        if unknown not in _UNKNOWN_POLICIES:
            raise ValueError("unknown must be one of %s, got %r" % (_UNKNOWN_POLICIES, unknown))
        self.fields = dict(fields)
        self.optional = dict(optional or {})
        overlap = set(self.fields) & set(self.optional)
        if overlap:
            raise ValueError("keys both required and optional: %s" % sorted(overlap))
        self.unknown = unknown
        self._schemas = {**self.optional, **self.fields}
        self._required = frozenset(self.fields)

    def _check(self, value: AnyType, path: Path, skip: Optional[str] = None) -> Dict[str, AnyType]:
        """The checked object; `skip` names a key left out of the check and the result (a tag)."""
        if type(value) is not dict:
            raise self._fail(path, value)
        if not self._required <= value.keys():
            missing = [key for key in self.fields if key not in value]
            raise JSONError("missing key(s) %s" % ", ".join(_brief(k) for k in missing), path=_render(path))
        result: Dict[str, AnyType] = {}
        schemas = self._schemas
        for key, item in value.items():
            schema = schemas.get(key)
            if schema is not None:
                result[key] = schema._check(item, (path, key))
            elif key == skip:
                continue
            elif self.unknown == "keep":
                result[key] = item
            elif self.unknown == "reject":
                known = sorted(set(self.fields) | set(self.optional))
                raise JSONError(
                    "unknown key %s (known: %s)" % (_brief(key), ", ".join(known) or "none"), path=_render(path)
                )
        return result


class Map(Schema):
    """An object with free keys (each of `keys`), every value of `values`."""

    expected = "an object"

    def __init__(self, values: Schema, keys: Optional[Str] = None, max_len: Optional[int] = None):
        self.values = values
        self.key_schema = keys if keys is not None else Str(0, 256)
        self.max_len = max_len

    def _check(self, value: AnyType, path: Path) -> Dict[str, AnyType]:
        if type(value) is not dict:
            raise self._fail(path, value)
        if self.max_len is not None and len(value) > self.max_len:
            raise JSONError("expected at most %d keys, got %d" % (self.max_len, len(value)), path=_render(path))
        result = {}
        for key, item in value.items():
            self.key_schema._check(key, (path, _KeyOf(key)))
            result[key] = self.values._check(item, (path, key))
        return result


class Tagged(Schema):
    """An object whose key `tag` names its variant; the other keys are checked
    by that variant's schema (usually an Object without the tag)."""

    expected = "an object"

    def __init__(self, tag: str, variants: Mapping[str, Schema]):
        self.tag = tag
        self.variants = dict(variants)

    def _check(self, value: AnyType, path: Path) -> Dict[str, AnyType]:
        if type(value) is not dict:
            raise self._fail(path, value)
        name = value.get(self.tag)
        if type(name) is not str or name not in self.variants:
            if self.tag not in value:
                raise JSONError("missing key %s" % _brief(self.tag), path=_render(path))
            raise JSONError(
                "unknown %s: expected one of %s, got %s"
                % (self.tag, ", ".join(json.dumps(v) for v in sorted(self.variants)), _brief(name)),
                path=_render((path, self.tag)),
            )
        variant = self.variants[name]
        if isinstance(variant, Object) and self.tag not in variant._schemas:
            checked = variant._check(value, path, skip=self.tag)  # no copy of the object without its tag
        else:
            checked = variant._check({key: item for key, item in value.items() if key != self.tag}, path)
        result = {self.tag: name}
        result.update(checked)
        return result


# ---------------------------------------------------------------- compiled checks


class _Invalid(Exception):
    """A compiled check refused the value; `Schema._check` then finds where and why."""


def _compile(schema: Schema) -> Callable[[AnyType], AnyType]:
    """`schema`'s check as straight-line Python: the same result as `_check` for every value
    it accepts (twice as fast on a message header: no call a scalar, no path), and
    `_Invalid` (or the JSONError of a kind left to its own `_check`, as Float) for every value
    `_check` refuses. Generated from the schema only: every key,
    number and string of it is a literal written by repr, anything else a named constant."""
    compiler = _Compiler()
    entry = compiler.function(schema)
    namespace: Dict[str, AnyType] = {"_Invalid": _Invalid, **compiler.constants}
    exec(compile("\n".join(compiler.lines), "<safejson %s>" % type(schema).__name__, "exec"), namespace)
    return namespace[entry]


class _Compiler:
    """Writes one function a container schema (so that no function nests more than one loop)
    and checks scalars inline."""

    def __init__(self) -> None:
        self.lines: ListType[str] = []
        self.constants: Dict[str, AnyType] = {}
        self.functions: Dict[Tuple[int, Optional[str]], str] = {}

    def constant(self, value: AnyType) -> str:
        """`value` in the code: an int or a str as its literal (repr quotes and escapes any
        text), anything else by name."""
        if type(value) in (int, str):
            return repr(value)
        name = "k%d" % len(self.constants)
        self.constants[name] = value
        return name

    def function(self, schema: Schema, skip: Optional[str] = None) -> str:
        """The name of a function checking one value of `schema` (an Object without key `skip`)."""
        key = (id(schema), skip)
        if key not in self.functions:
            name = self.functions[key] = "f%d" % len(self.functions)
            body: ListType[str] = []
            result = self.body(schema, body, skip)
            self.lines += ["def %s(value):" % name] + ["    " + line for line in body] + ["    return " + result]
        return self.functions[key]

    def body(self, schema: Schema, out: ListType[str], skip: Optional[str]) -> str:
        """Lines checking `value` against `schema` appended to `out`; the checked value's expression.
        Kinds are told apart by exact type, as in `inline`: a subclass is left to its own check."""
        if type(schema) is List:
            self.check(out, "type(value) is not list", self.length("value", schema.min_len, schema.max_len))
            loop: ListType[str] = []
            item = self.inline(schema.item, "item", loop)
            if item == "item":  # items come back as they are: check them, copy the list
                out += ["for item in value:"] + ["    " + line for line in loop or ["pass"]]
                return "list(value)"
            out += ["result = []", "for item in value:"] + ["    " + line for line in loop]
            out.append("    result.append(%s)" % item)
            return "result"
        if type(schema) is Object:
            return self.object_body(schema, out, skip)
        if type(schema) is Map:
            self.check(out, "type(value) is not dict", self.length("value", 0, schema.max_len))
            loop = []
            self.inline(schema.key_schema, "key", loop)
            item = self.inline(schema.values, "item", loop)
            out += ["result = {}", "for key, item in value.items():"] + ["    " + line for line in loop]
            out.append("    result[key] = %s" % item)
            return "result"
        if type(schema) is Tagged:
            tag = self.constant(schema.tag)
            self.check(out, "type(value) is not dict")
            out.append("name = value.get(%s)" % tag)
            self.check(out, "type(name) is not str")
            keyword = "if"
            for variant_name, variant in schema.variants.items():
                if type(variant) is Object and schema.tag not in variant._schemas:
                    call = "%s(value)" % self.function(variant, skip=schema.tag)
                else:
                    call = "%s({k: v for k, v in value.items() if k != %s})" % (self.function(variant), tag)
                out += ["%s name == %s:" % (keyword, self.constant(variant_name)), "    checked = " + call]
                keyword = "elif"
            out += ["else:", "    raise _Invalid", "result = {%s: name}" % tag, "result.update(checked)"]
            return "result"
        return self.inline(schema, "value", out)

    def object_body(self, schema: Object, out: ListType[str], skip: Optional[str]) -> str:
        self.check(out, "type(value) is not dict")
        if not schema.optional and schema.unknown == "reject" and skip not in schema.fields:
            # Exactly the fields (and the tag `skip`, which the Tagged check found): no loop over the keys.
            keys = len(schema.fields) + (skip is not None)
            self.check(out, "len(value) != %d" % keys,
                       "not %s <= value.keys()" % self.constant(schema._required) if schema.fields else "")
            calls: ListType[str] = []
            for number, (key, field) in enumerate(schema.fields.items()):
                name = "item%d" % number
                out.append("%s = value[%s]" % (name, self.constant(key)))
                item = self.inline(field, name, out)
                if item != name:
                    calls.append("result[%s] = %s" % (self.constant(key), item))
            out.append("result = dict(value)")  # with the tag `skip`, which Tagged puts first again anyway
            out += calls
            return "result"
        if schema._required:
            self.check(out, "not %s <= value.keys()" % self.constant(schema._required))
        branches: ListType[str] = []
        for key, field in schema._schemas.items():
            lines: ListType[str] = []
            item = self.inline(field, "item", lines)
            branches += ["elif key == %s:" % self.constant(key)] + ["    " + line for line in lines]
            branches.append("    result[key] = %s" % item)
        if skip is not None:
            branches += ["elif key == %s:" % self.constant(skip), "    pass"]
        unknown = {"keep": "result[key] = item", "drop": "pass", "reject": "raise _Invalid"}[schema.unknown]
        branches += ["else:", "    " + unknown]
        if branches[0].startswith("elif"):
            branches[0] = branches[0][2:]
        else:  # no known key: every key is unknown
            branches = branches[1:]
        out += ["result = {}", "for key, item in value.items():"] + ["    " + line for line in branches]
        return "result"

    def inline(self, schema: Schema, name: str, out: ListType[str]) -> str:
        """Lines checking variable `name` (a scalar here, a call for a container); its checked value."""
        if type(schema) is Any:
            return name
        if type(schema) is Bool:
            self.check(out, "type(%s) is not bool" % name)
            return name
        if type(schema) is Int:
            low = "" if schema.min is None else "%s <= " % self.constant(schema.min)
            high = "" if schema.max is None else " <= %s" % self.constant(schema.max)
            self.check(out, "type(%s) is not int" % name, "not %s%s%s" % (low, name, high) if low or high else "")
            return name
        if type(schema) is Str:
            self.check(out, "type(%s) is not str" % name, self.length(name, schema.min_len, schema.max_len))
            if schema.pattern is not None:
                self.check(out, "%s(%s) is None" % (self.constant(schema.pattern.fullmatch), name))
            return name
        if type(schema) is Enum:
            if all(kind is str for kind, _ in schema.choices):
                self.check(out, "type(%s) is not str" % name,
                           "%s not in %s" % (name, self.constant(frozenset(c for _, c in schema.choices))))
                return name
            types = self.constant(frozenset(kind for kind, _ in schema.choices))
            self.check(out, "type(%s) not in %s" % (name, types),
                       "(type(%s), %s) not in %s" % (name, name, self.constant(frozenset(schema.choices))))
            return name
        if type(schema) is Nullable:
            lines: ListType[str] = []
            inner = self.inline(schema.schema, name, lines)  # a scalar's checks, or a container's call
            if lines:
                out += ["if %s is not None:" % name] + ["    " + line for line in lines]
            return name if inner == name else "(None if %s is None else %s)" % (name, inner)
        if type(schema) in (List, Object, Map, Tagged):
            return "%s(%s)" % (self.function(schema), name)
        return "%s(%s, '$')" % (self.constant(schema._check), name)  # Float and any other kind: its own check

    def length(self, name: str, low: int, high: Optional[int]) -> str:
        if high is None:
            return "len(%s) < %d" % (name, low) if low else ""
        return "not %d <= len(%s) <= %d" % (low, name, high)

    @staticmethod
    def check(out: ListType[str], *conditions: str) -> None:
        conditions = tuple(c for c in conditions if c)
        out.append("if %s: raise _Invalid" % " or ".join(conditions))
