"""fedcore.safejson: bounded parsing of untrusted JSON and the declarative schema."""

import json
import math
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcore import safejson as sj
from fedcore.errors import FedCoreError, JSONError

# JSON values of bounded depth; strings full of the characters the depth scan must skip.
tricky_text = st.text(alphabet=st.sampled_from('ab[]{}",:\\ \u00e9\U0001f600'), max_size=12)
scalars = (st.none() | st.booleans() | st.integers(-10**19, 10**19)
           | st.floats(allow_nan=False, allow_infinity=False) | tricky_text)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(tricky_text, inner, max_size=3), max_leaves=30)


def _depth(value) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


# ---------------------------------------------------------------- parsing


@given(values)
def test_round_trip_of_plain_json(value):
    text = json.dumps(value)

    assert sj.loads(text, sj.Limits(max_depth=200)) == value
    assert sj.loads(text.encode("utf-8"), sj.Limits(max_depth=200)) == value


@given(st.integers(0, 12).flatmap(lambda depth: st.tuples(st.just(depth), values)), st.integers(1, 12))
def test_depth_limit_is_exact(nested, limit):
    depth, inner = nested
    value = inner
    for level in range(depth):
        value = [value] if level % 2 else {"k[\"": value}
    text = json.dumps(value, ensure_ascii=False)

    if _depth(value) <= limit:
        assert sj.loads(text, sj.Limits(max_depth=limit)) == value
    else:
        with pytest.raises(JSONError, match="nested deeper than %d levels" % limit):
            sj.loads(text, sj.Limits(max_depth=limit))


@pytest.mark.parametrize("key", ["k", "[", "]]", "{[", "}", "a]b{"])
@pytest.mark.parametrize("limit", [1, 2, 5, 16])
def test_depth_limit_of_small_documents_without_escapes(key, limit):
    # the scan's quick path: no backslash, so strings (with brackets in them or not) are cut by quotes
    for depth in range(limit, limit + 2):
        value = 0
        for level in range(depth):
            value = [value, "x%s" % key] if level % 2 else {key: value, "]": "[{"}
        text = json.dumps(value)
        assert "\\" not in text
        if depth <= limit:
            assert sj.loads(text, sj.Limits(max_depth=limit)) == value
        else:
            with pytest.raises(JSONError, match="nested deeper than %d levels" % limit):
                sj.loads(text, sj.Limits(max_depth=limit))


@pytest.mark.parametrize("text", ['["]",[[0]],"["]', '{"]":[{"a":0}],"[":0}', '[0,"}",{"a":[1]},"{"]'])
def test_brackets_in_strings_never_hide_a_level(text):
    # counted as brackets, the strings' ] and [ would balance and the document would look 2 deep
    with pytest.raises(JSONError, match="nested deeper than 2 levels"):
        sj.loads(text, sj.Limits(max_depth=2))
    assert sj.loads(text, sj.Limits(max_depth=3)) == json.loads(text)


@pytest.mark.parametrize("opener, closer", [("[", "]"), ('{"a":', "}"), ('{"a":[', "]}")])
def test_100000_levels_are_refused_fast_without_recursion(opener, closer):
    text = opener * 100_000 + "0" + closer * 100_000
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)  # a parser that recursed would fail here with RecursionError
    try:
        start = time.perf_counter()
        with pytest.raises(JSONError, match=r"^\$ \(byte \d+\): nested deeper than 16 levels$"):
            sj.loads(text, sj.Limits(max_bytes=1 << 21))
        elapsed = time.perf_counter() - start
    finally:
        sys.setrecursionlimit(limit)
    assert elapsed < 0.5


@pytest.mark.parametrize("text, reason", [
    ('{"train_s": %s}' % ("9" * 400), r"\(byte 12\): an integer of 400 digits exceeds the limit of 20 digits"),
    ("[-%s]" % ("1" * 21), "an integer of 21 digits"),
    ("[1e400]", "the number 1e400 is beyond the float64 range"),
    ("[-1E+999]", "beyond the float64 range"),
    ("[%s.5]" % ("9" * 400), "beyond the float64 range"),
    ("[NaN]", r"\(byte 1\): NaN is not JSON"),
    ('{"a": Infinity}', "Infinity is not JSON"),
    ("[-Infinity]", "-Infinity is not JSON"),
    ('{"a": 1, "a": 2}', 'an object repeats the key "a"'),
    ('[{"x": {"b": 1, "b": 1}}]', 'repeats the key "b"'),
    ('["\\ud800"]', r"\(byte 2\): a string escapes a lone UTF-16 surrogate"),
    ('["\\udc00\\ud800"]', "lone UTF-16 surrogate"),
    ('{"\\ud83d": 1}', "lone UTF-16 surrogate"),
    ("[1,]", r"\(byte 3\): not valid JSON: Expecting value"),
    ('"abc', "Unterminated string"),
    ("", "Expecting value"),
    ("[1] [2]", "Extra data"),
])
def test_refusals_name_the_reason(text, reason):
    with pytest.raises(JSONError, match=reason):
        sj.loads(text)


def test_limits_of_size_and_encoding():
    with pytest.raises(JSONError, match=r"^\$: document of 11 bytes exceeds the limit of 10$"):
        sj.loads(b'"123456789"', sj.Limits(max_bytes=10))
    with pytest.raises(JSONError, match="document of 6 bytes exceeds"):
        sj.loads('"\u00e9\u00e9"', sj.Limits(max_bytes=5))  # counted in UTF-8 bytes
    with pytest.raises(JSONError, match=r"\(byte 2\): not UTF-8"):
        sj.loads(b'["\xff"]')
    with pytest.raises(JSONError, match="character 2 is a lone surrogate"):
        sj.loads('["\ud800"]')
    with pytest.raises(JSONError, match="bytes or str, got int"):
        sj.loads(12)


def test_accepted_edge_values():
    assert sj.loads("[%s, -%s]" % ("9" * 20, "9" * 20)) == [10**20 - 1, -(10**20 - 1)]
    assert sj.loads('["\\ud83d\\ude00", "\\\\ud800", "a\\\\"]') == ["\U0001f600", "\\ud800", "a\\"]
    assert sj.loads("[1e-400, 1.7976931348623157e308]") == [0.0, 1.7976931348623157e308]
    assert sj.loads(bytearray(b"{}")) == {} and sj.loads(memoryview(b"[]")) == []


@pytest.mark.parametrize("field, value", [("max_depth", 0), ("max_depth", 201), ("max_bytes", 0),
                                          ("max_int_digits", True)])
def test_limits_reject_unsafe_settings(field, value):
    with pytest.raises(ValueError, match="Limits.%s" % field):
        sj.Limits(**{field: value})


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_random_bytes_only_raise_json_error(data):
    try:
        sj.loads(data)
    except JSONError:
        pass


@settings(max_examples=300)
@given(values, st.data())
def test_mutated_json_text_only_raises_json_error(value, data):
    text = bytearray(json.dumps(value).encode())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        text[at:at + data.draw(st.integers(0, 2))] = data.draw(
            st.sampled_from([b"[", b"{", b"]", b"}", b'"', b"\\", b"\\u", b"\\ud800", b"9" * 30, b"NaN",
                             b"1e999", b",", b":", b"\xff", b'"a":1,"a":2']))
    try:
        sj.loads(bytes(text), sj.Limits(max_depth=4))
    except JSONError:
        pass


def test_json_error_is_a_fedcore_value_error_with_path_and_offset():
    with pytest.raises(JSONError) as info:
        sj.loads("[1,]")

    assert isinstance(info.value, FedCoreError) and isinstance(info.value, ValueError)
    assert (info.value.path, info.value.offset) == ("$", 3)


# ---------------------------------------------------------------- schemas

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
GOOD = {"v": 1, "status": "online", "client": "client-003", "time": 1795459680,
        "capabilities": {"samples": 5934, "python": "3.8.2"},
        "last_update": {"round": 4, "train_s": 3, "bytes": 17785}}


def test_the_module_docstring_example():
    presence = sj.parse(json.dumps(GOOD), PRESENCE, sj.Limits(max_bytes=64 << 10, max_depth=8))

    assert presence["capabilities"] == {"samples": 5934}  # unknown="drop"
    assert presence["last_update"]["train_s"] == 3.0 and type(presence["last_update"]["train_s"]) is float
    assert type(presence["time"]) is float


@pytest.mark.parametrize("change, reason", [
    ({"v": 2}, r"^\$\.v: expected an integer in 1\.\.1, got 2$"),
    ({"v": True}, r"\$\.v: expected an integer in 1..1, got true"),
    ({"v": 1.0}, r"\$\.v: expected an integer in 1..1, got 1.0"),
    ({"status": "away"}, r'\$\.status: expected one of "online", "offline", got "away"'),
    ({"status": ["online"]}, r"\$\.status: expected one of .*, got a list of 1 item\(s\)"),
    ({"client": "a b"}, r"\$\.client: expected a string of 0\.\.256 characters matching"),
    ({"client": "x" * 300}, r'\$\.client: expected a string .*, got "xxxx'),
    ({"time": -1}, r"\$\.time: expected a finite number in 0..100000000000.0, got -1"),
    ({"time": "now"}, r"\$\.time: expected a finite number"),
    ({"last_update": {"round": 4, "train_s": 1e300, "bytes": 1}},
     r"^\$\.last_update\.train_s: expected a finite number in 0\.\.86400, got 1e\+300$"),
    ({"last_update": {"round": 4, "train_s": 10**30, "bytes": 1}}, r"\$\.last_update\.train_s"),
    ({"last_update": {"round": 4, "train_s": 1}}, r'\$\.last_update: missing key\(s\) "bytes"'),
    ({"last_update": [1]}, r"\$\.last_update: expected an object, got a list"),
    ({"extra": 1}, r'^\$: unknown key "extra" \(known: capabilities, client, last_update, status, time, v\)$'),
])
def test_schema_errors_name_the_path(change, reason):
    document = dict(GOOD, **change)

    with pytest.raises(JSONError, match=reason):
        PRESENCE.validate(document)


def test_optional_and_nullable():
    minimal = {"v": 1, "status": "offline", "client": "c", "time": 0}

    assert PRESENCE.validate(minimal) == dict(minimal, time=0.0)
    assert PRESENCE.validate(dict(minimal, last_update=None))["last_update"] is None
    with pytest.raises(JSONError, match=r'\$: missing key\(s\) "v", "time"'):
        PRESENCE.validate({"status": "offline", "client": "c"})


def test_lists_maps_and_paths():
    schema = sj.Object({"runs": sj.List(sj.Map(sj.Float(), keys=sj.Str(1, 8), max_len=2), max_len=2)},
                       unknown="keep")

    assert schema.validate({"runs": [{"loss": 1}], "x": [[]]}) == {"runs": [{"loss": 1.0}], "x": [[]]}
    with pytest.raises(JSONError, match=r"^\$\.runs\[1\]\.acc: expected a finite number, got \"no\"$"):
        schema.validate({"runs": [{}, {"acc": "no"}]})
    with pytest.raises(JSONError, match=r'\$\.runs\[0\]\["a b"\]: expected a finite number'):
        schema.validate({"runs": [{"a b": None}]})
    with pytest.raises(JSONError, match=r"\$\.runs: expected a list of 0\.\.2 items, got 3"):
        schema.validate({"runs": [{}, {}, {}]})
    with pytest.raises(JSONError, match=r"\$\.runs\[0\]: expected at most 2 keys, got 3"):
        schema.validate({"runs": [{"a": 1, "b": 2, "c": 3}]})
    with pytest.raises(JSONError, match=r'\$\.runs\[0\]\{key ""\}: expected a string of 1\.\.8'):
        schema.validate({"runs": [{"": 1}]})


def test_tagged_variants():
    stage = sj.Tagged("op", {"deflate": sj.Object({}), "affine": sj.Object({"bits": sj.Int(1, 8)})})

    assert stage.validate({"op": "affine", "bits": 4}) == {"op": "affine", "bits": 4}
    with pytest.raises(JSONError, match=r'^\$\.op: unknown op: expected one of "affine", "deflate", got "zstd"$'):
        stage.validate({"op": "zstd"})
    with pytest.raises(JSONError, match=r"\$\.op: unknown op: .*, got a list of 1 item\(s\)"):
        stage.validate({"op": ["deflate"]})  # unhashable: a TypeError in a set lookup
    with pytest.raises(JSONError, match=r'^\$: missing key "op"$'):
        stage.validate({"bits": 4})
    with pytest.raises(JSONError, match=r'\$: unknown key "bits" \(known: none\)'):
        stage.validate({"op": "deflate", "bits": 4})


def test_enum_compares_types_and_floats_are_finite():
    assert sj.Enum(1, "1").validate(1) == 1
    with pytest.raises(JSONError):
        sj.Enum(1).validate(True)
    with pytest.raises(JSONError, match="got an integer of about 401 digits"):
        sj.Float().validate(10**400)
    with pytest.raises(JSONError, match="got inf"):
        sj.Float().validate(math.inf)
    with pytest.raises(JSONError):
        sj.Int().validate(2.0)
    assert sj.Any().validate({"free": [1]}) == {"free": [1]}
    assert sj.Bool().validate(False) is False


def test_schema_construction_errors():
    with pytest.raises(ValueError, match="unknown must be one of"):
        sj.Object({}, unknown="ignore")
    with pytest.raises(ValueError, match="both required and optional"):
        sj.Object({"a": sj.Int()}, optional={"a": sj.Int()})
    with pytest.raises(ValueError, match="at least one choice"):
        sj.Enum()


# ---------------------------------------------------------------- compiled checks

# One schema with every kind, nested as the message header and the MQTT payloads nest them.
EVERY_KIND = sj.Object(
    {
        "n": sj.Int(0, 9),
        "open": sj.Int(),
        "x": sj.Float(-1, 1),
        "s": sj.Str(1, 3, pattern="[ab]+"),
        "e": sj.Enum("a", 1, True, None),
        "words": sj.Enum("up", "down"),
        "b": sj.Bool(),
        "free": sj.Any(),
        "items": sj.List(sj.Nullable(sj.Int(0, 5)), min_len=1, max_len=3),
        "stages": sj.List(sj.Tagged("op", {
            "p": sj.Object({"k": sj.Int(0, 3)}),
            "q": sj.Tagged("how", {"r": sj.Object({}), "t": sj.Object({"op": sj.Str()})}),
            "any": sj.Any(),
        })),
        "map": sj.Map(sj.Nullable(sj.Object({"v": sj.Bool()})), keys=sj.Str(1, 2), max_len=2),
    },
    optional={"kept": sj.Object({"a": sj.Int()}, unknown="keep"), "dropped": sj.Object({}, unknown="drop")},
)

_near = st.deferred(lambda: _near_values)
_near_scalars = (st.integers(-2, 12) | st.sampled_from([True, False, None, "a", "ab", "abc", "c", "", 1.0, 0.5,
                                                        "up", "down", "p", "q", "r", "t", "any", 1e300]))
_near_values = st.recursive(
    _near_scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["n", "open", "x", "s", "e", "words", "b", "free", "items", "stages", "map",
                                       "kept", "dropped", "op", "k", "how", "v", "a", "zz", "ab"]), inner,
                      max_size=6),
    max_leaves=25,
)


def _valid_every_kind(data):
    draw = data.draw
    stage = draw(st.sampled_from([{"op": "p", "k": 2}, {"op": "q", "how": "r"}, {"how": "t", "op": "q"},
                                  {"op": "any", "z": [1]}]))
    value = {"n": 3, "open": -10**30, "x": 0, "s": "ab", "e": None, "words": "up", "b": False,
             "free": {"x": [1, None]}, "items": [None, 5], "stages": [stage, dict(stage)],
             "map": {"a": {"v": True}, "bc": None}, "kept": {"a": 1, "z": "kept"}, "dropped": {"gone": 1}}
    # then a few parts of it replaced by values near the schema's
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(sorted(value) + ["zz"]))
        value[key] = draw(_near)
    return value


def _ordered(value):
    """A value with the order of its keys made visible to ==."""
    if isinstance(value, dict):
        return [(key, _ordered(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [_ordered(item) for item in value]
    return (type(value), value)


def _both_ways(schema, value):
    try:
        expected = ("ok", _ordered(schema._check(value, "$")))
    except JSONError:
        expected = ("refused",)
    compiled = sj._compile(schema)
    try:
        got = ("ok", _ordered(compiled(value)))
    except (sj._Invalid, JSONError):  # JSONError: from the kinds left to their own check (Float)
        got = ("refused",)
    return expected, got


@settings(max_examples=400)
@given(st.data())
def test_the_compiled_check_accepts_and_returns_exactly_what_the_check_does(data):
    expected, got = _both_ways(EVERY_KIND, _valid_every_kind(data))

    assert got == expected


@settings(max_examples=200)
@given(_near)
def test_the_compiled_check_refuses_what_the_check_refuses(value):
    for schema in (EVERY_KIND, EVERY_KIND.fields["stages"], EVERY_KIND.fields["map"]):
        expected, got = _both_ways(schema, value)
        assert got == expected


def test_a_refused_value_still_gets_the_checks_error_and_path():
    with pytest.raises(JSONError) as raised:
        EVERY_KIND.validate({**_valid_every_kind_fixed(), "items": [None, 6]})

    assert raised.value.path == "$.items[1]"
    assert "an integer in 0..5" in str(raised.value)


def _valid_every_kind_fixed():
    return {"n": 3, "open": 0, "x": 0.5, "s": "a", "e": 1, "words": "down", "b": True, "free": None,
            "items": [1], "stages": [], "map": {}}


def test_the_compiled_check_of_a_valid_document_is_a_fresh_copy():
    value = _valid_every_kind_fixed()
    checked = EVERY_KIND.validate(value)

    assert checked == {**value, "x": 0.5} and checked is not value and checked["items"] is not value["items"]
    assert EVERY_KIND._fast is not None  # compiled once, kept
