"""Payload formats 2 and 3: the class-names section (task, version, in format 3 the student recipe, and the C
class names) between the header and the body. The documented byte layout, golden payloads, the limits on what
may travel, and the message for every way a hostile section can be wrong. What every codec's payload must survive
with names too (truncation, bit flips, forged counts, bombs) is in ``test_codec_contract.py``.

Sections and payloads are built here from the format description (own packing), so the tests pin the
documented format (``docs/payload-format.md``) rather than whatever the encoder happens to do.
"""

from __future__ import annotations

import hashlib
import struct
import time

import pytest
import zstandard

from plada_core.payload import HEADER_SIZE, PayloadError, decode_payload, encode_payload, read_header

FP = "0123456789abcdef" * 4
INDICES, LABELS = [3, 4, 5, 9, 40, 41, 47], [1, 1, 0, 2, 2, 2, 1]


def section(text: bytes, *, encoding: int = 0, stored: bytes | None = None) -> bytes:
    """A names section: encoding u8, stored length u32 LE, stored bytes (the text itself unless given)."""
    stored = text if stored is None else stored
    return struct.pack("<BI", encoding, len(stored)) + stored


def forge_v2(names: bytes, body: bytes, *, n: int, k: int, c: int, codec_id: int = 1, version: int = 2) -> bytes:
    """A format-2 (``version=3``: format-3) payload with a valid checksum (over every byte but its own) around
    any section and body."""
    fields = struct.pack("<6sBB32sQQII", b"PLADA\x00", version, codec_id, bytes.fromhex(FP), n, k, c, len(body))
    return fields + hashlib.blake2b(fields + names + body, digest_size=8).digest() + names + body


def encode(class_names=None, codec="paper-zstd19", c=3, **kwargs) -> bytes:
    return encode_payload(INDICES, LABELS, n_reference=50, n_classes=c, fingerprint=FP, codec=codec,
                          class_names=class_names, **kwargs)


def body_of(c: int = 3, codec: str = "paper-zstd19") -> bytes:
    return encode(codec=codec, c=c)[HEADER_SIZE:]  # a version-1 payload is header + body


# ---------------------------------------------------------------- the documented byte layout and golden payloads


def test_version_1_is_still_written_without_names_and_the_body_does_not_change_with_them():
    plain = encode()
    assert plain[6] == 1 and read_header(plain)["class_names"] is None
    named = encode(["cat", "dog", "fox"])
    assert named[6] == 2 and named.endswith(plain[HEADER_SIZE:])


def test_version_2_is_the_documented_layout():
    data = encode(["cat", "dog", "fox"], task="pets", version="v1")
    text = b"pets\nv1\ncat\ndog\nfox"
    assert data == forge_v2(section(text), body_of(), n=50, k=7, c=3)


def test_task_and_version_are_optional_and_empty_when_absent():
    data = encode(["cat", "dog", "fox"])
    assert data == forge_v2(section(b"\n\ncat\ndog\nfox"), body_of(), n=50, k=7, c=3)
    header = read_header(data)
    assert (header["task"], header["version"], header["class_names"]) == (None, None, ("cat", "dog", "fox"))
    only_version = read_header(encode(["cat", "dog", "fox"], version="2024-06-01"))
    assert (only_version["task"], only_version["version"]) == (None, "2024-06-01")


# N = 50, C = 3, codec "context-rc2", names stored: task "pets", version "2024-06-01", names cat, dog, fox
GOLDEN_STORED = bytes.fromhex(
    "504c4144410002030123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef3200000000000000070000000000"
    "0000030000000900000068532d7df7a05cd9001b000000706574730a323032342d30362d30310a6361740a646f670a666f78c28418"
    "62ade1860000"
)
# N = 50, C = 10, codec "context-rc", names as one zstd frame (smaller than stored): n01440764, n01440781, …
GOLDEN_ZSTD = bytes.fromhex(
    "504c4144410002020123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef320000000000000007000000000"
    "000000a0000000a000000fda534d5c1574029013900000028b52ffd2065850100f80a0a6e303134343037363438313938383135333234"
    "3936363833393030313709a810caed39d0eb10267dae3e14a61dc0a0280ef1bd81000000"
)
SYNSETS = tuple(f"n{1440764 + 17 * i:08d}" for i in range(10))


def test_golden_payloads_still_decode():
    stored = decode_payload(GOLDEN_STORED, expected_fingerprint=FP, expected_n_reference=50)
    assert (stored.indices.tolist(), stored.labels.tolist()) == (INDICES, LABELS)
    assert (stored.class_names, stored.task, stored.version) == (("cat", "dog", "fox"), "pets", "2024-06-01")
    assert (stored.codec, stored.format_version) == ("context-rc2", 2)
    packed = decode_payload(GOLDEN_ZSTD)
    assert (packed.indices.tolist(), packed.labels.tolist()) == (INDICES, LABELS)
    assert (packed.class_names, packed.task, packed.version, packed.codec) == (SYNSETS, None, None, "context-rc")
    assert GOLDEN_ZSTD[HEADER_SIZE] == 1
    text = zstandard.ZstdDecompressor().decompress(GOLDEN_ZSTD[HEADER_SIZE + 5 : HEADER_SIZE + 5 + 0x39])
    assert text == b"\n\n" + "\n".join(SYNSETS).encode()


def test_encoder_still_writes_the_golden_payloads():
    assert encode(["cat", "dog", "fox"], "context-rc2", task="pets", version="2024-06-01") == GOLDEN_STORED
    # the zstd frame's bytes may differ between libzstd releases; the choice of zstd and the rest may not
    data = encode(SYNSETS, "context-rc", c=10)
    assert data[HEADER_SIZE] == 1 and decode_payload(data).class_names == SYNSETS
    assert data[-len(body_of(10, "context-rc")):] == GOLDEN_ZSTD[-len(body_of(10, "context-rc")):]


def test_zstd_is_chosen_only_when_smaller():
    assert encode(["a", "b", "c"])[HEADER_SIZE] == 0
    long_names = [f"a rather long and repetitive class name number {i}" for i in range(3)]
    assert encode(long_names)[HEADER_SIZE] == 1


def test_payload_and_header_carry_the_names():
    names = ["café", "日本の猫", "x" * 256]  # multibyte UTF-8; a name of exactly the 256-byte limit
    payload = decode_payload(encode(names, "layout-rc", layout=[25, 25], task="t.1_x-2", version="V"), layout=[25, 25])
    assert (payload.class_names, payload.task, payload.version, payload.format_version) == (tuple(names), "t.1_x-2",
                                                                                            "V", 2)
    assert decode_payload(encode()).class_names is None and decode_payload(encode()).format_version == 1
    assert read_header(encode(["a", "a", "b"]))["class_names"] == ("a", "a", "b")  # duplicates are the caller's


def test_auto_keeps_the_names():
    data = encode(["cat", "dog", "fox"], "auto", task="pets")
    assert read_header(data)["task"] == "pets" and len(data) == min(
        len(encode(["cat", "dog", "fox"], codec, task="pets")) for codec in ("paper-zstd19", "context-rc",
                                                                              "context-rc2"))


# ---------------------------------------------------------------- the encoder refuses names that cannot travel


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(class_names=["a", "b"]), "got 2 class names for n_classes=3: pass one name per class"),
        (dict(class_names=["a", "b", "c", "d"]), "got 4 class names"),
        (dict(class_names="abc"), "class_names must be a list of strings, got str"),
        (dict(class_names=["a", 2, "c"]), "class name 1 must be a string, got int"),
        (dict(class_names=["a", "", "c"]), "class name 1 is empty"),
        (dict(class_names=["a", "x" * 257, "c"]), "class name 1 .* is 257 bytes of UTF-8, more than 256: shorten it"),
        (dict(class_names=["a", "€" * 86, "c"]), "is 258 bytes of UTF-8"),
        (dict(class_names=["a", "b\nc", "d"]), "class name 1 .* holds the control character U\\+000A"),
        (dict(class_names=["a\t", "b", "c"]), "U\\+0009"),
        (dict(class_names=["a", "b", "c\x00"]), "U\\+0000"),
        (dict(class_names=["a", "b", "c\x7f"]), "U\\+007F"),
        (dict(class_names=["a", "b", "c\x85"]), "U\\+0085"),
        (dict(class_names=["a", "b", "\ud800"]), "class name 2 .* is not valid Unicode"),
        (dict(class_names=["a", "b", "c"], task="bad name"), "task 'bad name' is not a release name"),
        (dict(class_names=["a", "b", "c"], task="-x"), "task '-x' is not a release name"),
        (dict(class_names=["a", "b", "c"], task="v1\n"), "task 'v1\\\\n' is not a release name"),
        (dict(class_names=["a", "b", "c"], task="a" * 101), "task 'a.*' is not a release name"),
        (dict(class_names=["a", "b", "c"], version="ü"), "version 'ü' is not a release name"),
        (dict(class_names=["a", "b", "c"], version=3), "version must be a string or None, got int"),
        (dict(task="pets"), "task, version and student recipe travel with the class names.*pass class_names"),
        (dict(version="v1"), "pass class_names"),
    ],
)
def test_encode_rejects_names_that_cannot_travel(kwargs, match):
    with pytest.raises(ValueError, match=match):
        encode(**kwargs)


def test_the_longest_task_and_version_are_accepted():
    data = encode(["a", "b", "c"], task="T" * 100, version="9" * 100)
    assert (read_header(data)["task"], read_header(data)["version"]) == ("T" * 100, "9" * 100)


# ---------------------------------------------------------------- hostile sections behind a valid checksum


def zstd(text: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(text)


HOSTILE = [  # (section, C, the message)
    (section(b"\n\na\nb"), 3, "holds 2 class names but the header says C=3"),
    (section(b"\n\na\nb\nc\nd"), 3, "holds 4 class names but the header says C=3"),
    (section(b""), 1, "holds 0 class names but the header says C=1"),
    (section(b"\n\na\n\nc"), 3, "class name 1 is empty"),
    (section(b"\n\na\nb\n"), 3, "class name 2 is empty"),  # a trailing newline is one name too many, and empty
    (section(b"\n\na\n" + b"x" * 257 + b"\nc"), 3, "class name 1 .* is 257 bytes of UTF-8, more than 256"),
    (section(b"\n\na\nb\tc\nd"), 3, "class name 1 .* holds the control character U\\+0009"),
    (section(b"\n\na\nb\r\nd"), 3, "U\\+000D"),
    (section(b"\n\na\nb\xc2\x85\nd"), 3, "U\\+0085"),
    (section(b"\n\na\n\xff\nc"), 3, "class name 1 is not valid UTF-8 \\(invalid start byte at byte 0\\)"),
    (section(b"\n\na\nb\xe6\x97\nc"), 3, "class name 1 is not valid UTF-8"),  # cut inside a character
    (section(b"\n\na\n\xed\xa0\x80\nc"), 3, "class name 1 is not valid UTF-8"),  # an encoded surrogate
    (section(b"bad name\n\na\nb\nc"), 3, "task 'bad name' is not a release name"),
    (section(b"\nv\xc3\xbc\na\nb\nc"), 3, "version .* is not a release name"),
    (section(b"T" * 101 + b"\n\na\nb\nc"), 3, "task is 101 bytes, more than 100"),
    (section(b"\n\na\nb\nc", encoding=2), 3, "unknown class-names encoding 2 .*upgrade plada"),
    (section(b"", stored=b"\n" * 459), 1, "stores 459 bytes, more than the 458 that C=1 names allow"),
    (section(b"", encoding=1, stored=b"not zstd"), 3, "section is not valid zstd data"),
    (section(b"", encoding=1, stored=zstd(b"\n\na\nb\nc") + b"x"), 3, "trailing bytes after the zstd frame"),
    (section(b"", encoding=1, stored=zstd(b"\n\na\nb\nc")[:-2]), 3, "ends inside its zstd frame"),
    (section(b"", encoding=1, stored=zstd(b"\n\n" + b"a\n" * 1000 + b"a")), 3, "decompression bomb"),
    (section(b"", encoding=1, stored=zstd(b"\n\nab\ncd\n\x01")), 3, "class name 2 .* U\\+0001"),  # checked inside zstd
]


@pytest.mark.parametrize(("names", "c", "match"), HOSTILE)
def test_hostile_sections_are_rejected_with_the_problem_named(names, c, match):
    data = forge_v2(names, body_of(), n=50, k=7, c=c)  # read_header fails before the body is read
    with pytest.raises(PayloadError, match=match) as err:
        read_header(data)
    assert "class-names" in str(err.value)
    with pytest.raises(PayloadError, match=match):
        decode_payload(data)


def test_hostile_section_messages_say_what_to_do():
    with pytest.raises(PayloadError, match="corrupt or forged: re-send it, or ask its publisher to rebuild it"):
        read_header(forge_v2(section(b"\n\na\n\nc"), body_of(), n=50, k=7, c=3))


@pytest.mark.parametrize("c", [1, 1000, 1_000_000])
def test_a_bomb_in_the_names_is_refused_fast(c):
    frame = zstandard.ZstdCompressor(level=1).compress(b"\n\n" + b"a\n" * 50_000_000)  # 100 MB in a few KB
    assert len(frame) < 10_000
    start = time.perf_counter()
    with pytest.raises(PayloadError):
        read_header(forge_v2(section(b"", encoding=1, stored=frame), b"", n=50, k=0, c=c))
    assert time.perf_counter() - start < 2.0


def test_framing_of_version_2():
    data = GOLDEN_STORED
    with pytest.raises(PayloadError, match="shorter than the 72-byte header and the 5-byte class-names prefix"):
        read_header(data[:HEADER_SIZE + 3])
    with pytest.raises(PayloadError, match="announces a 32-byte class-names section and a 9-byte body"):
        read_header(data[:-1])
    with pytest.raises(PayloadError, match="1 bytes of trailing garbage"):
        read_header(data + b"\x00")
    for offset in (HEADER_SIZE, HEADER_SIZE + 4, HEADER_SIZE + 10):  # the section is under the checksum
        flipped = bytearray(data)
        flipped[offset] ^= 0x01
        with pytest.raises(PayloadError, match="checksum mismatch|truncated|trailing garbage"):
            read_header(bytes(flipped))


def test_a_version_1_payload_cannot_hide_a_section():
    """Version 1 has no section: the same bytes under version 1 are a body, which the codec refuses."""
    data = forge_v2(b"", section(b"\n\na\nb\nc") + body_of(), n=50, k=7, c=3, version=1)
    header = read_header(data)  # frames fine: version 1 reads everything after the header as the body…
    assert header["class_names"] is None
    with pytest.raises(PayloadError):
        decode_payload(data)  # …which is not a valid body


# ---------------------------------------------------------------- format 3: the student recipe line

RECIPE = {"model": "plada_effnet_lite0_ml", "preprocess": {"channels": 3, "crop": "none", "image_size": 32}}
RECIPE_TEXT = b'{"model":"plada_effnet_lite0_ml","preprocess":{"channels":3,"crop":"none","image_size":32}}'


def test_version_3_is_the_documented_layout():
    data = encode(["cat", "dog", "fox"], task="pets", version="v1", student_recipe={"model": "m", "size": 8})
    text = b'pets\nv1\n{"model":"m","size":8}\ncat\ndog\nfox'
    assert data == forge_v2(section(text), body_of(), n=50, k=7, c=3, version=3)
    assert data[6] == 3 and read_header(data)["student_recipe"] == {"model": "m", "size": 8}
    assert read_header(encode(["cat", "dog", "fox"]))["student_recipe"] is None  # format 2 carries none


def test_the_recipe_is_written_compact_and_key_sorted_whatever_the_order_given():
    shuffled = {"preprocess": {"image_size": 32, "crop": "none", "channels": 3}, "model": "plada_effnet_lite0_ml"}
    assert encode(["a", "b", "c"], student_recipe=shuffled) == encode(["a", "b", "c"], student_recipe=RECIPE)


# N = 50, C = 3, codec "context-rc2", zstd section (smaller than stored): task "pets", version "2024-06-01",
# RECIPE, names cat, dog, fox
GOLDEN_RECIPE = bytes.fromhex(
    "504c4144410003030123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef32000000000000000700000000000000"
    "03000000090000005b773bbe4be76e3e016b00000028b52ffd20771503007287171680e91808a8c0682c096a38cf401df84368661a933216"
    "087da6a0ce5cd6ccb22441f909b4eb0593d0c79f745ab9d2a3f908ca367e4e66342bcad6bed1a3fea83e8e72a15f18d7fd7cef8b3916ab95"
    "e31d95564c800002014342c9d8fb1a00c2841862ade1860000"
)


def test_the_golden_format_3_payload_decodes_and_is_still_written():
    payload = decode_payload(GOLDEN_RECIPE, expected_fingerprint=FP, expected_n_reference=50)
    assert (payload.indices.tolist(), payload.labels.tolist(), payload.format_version) == (INDICES, LABELS, 3)
    assert (payload.class_names, payload.task, payload.version) == (("cat", "dog", "fox"), "pets", "2024-06-01")
    assert payload.student_recipe == RECIPE
    text = zstandard.ZstdDecompressor().decompress(GOLDEN_RECIPE[HEADER_SIZE + 5 : HEADER_SIZE + 5 + 0x6B])
    assert text == b"pets\n2024-06-01\n" + RECIPE_TEXT + b"\ncat\ndog\nfox"
    # the zstd frame's bytes may differ between libzstd releases; the choice of zstd and the rest may not
    data = encode(["cat", "dog", "fox"], "context-rc2", task="pets", version="2024-06-01", student_recipe=RECIPE)
    assert data[:64] == GOLDEN_RECIPE[:64] and data[HEADER_SIZE] == 1 and data.endswith(body_of(3, "context-rc2"))


@pytest.mark.parametrize(
    ("recipe", "match"),
    [
        ("plada_cnn", "the recipe must be an object"),
        ({}, "the recipe's model 'None' is not a model name"),
        ({"model": "bad model"}, "the recipe's model 'bad model' is not a model name"),
        ({"model": 3}, "the recipe's model '3' is not a model name"),
        ({"model": "m", "Image": 3}, "recipe key 'Image' is not a lower-case identifier"),
        ({"model": "m", "x": float("nan")}, "recipe entry 'x' is nan: use a finite number"),
        ({"model": "m", "x": [1, 2]}, "recipe entry 'x' is a list"),
        ({"model": "m", "p": {"q": {"r": 1}}}, "recipe entry 'q' is a dict: use a string, a number, a boolean$"),
        ({"model": "m", "x": "a\nb"}, "recipe entry 'x' .* without control characters"),
        ({"model": "m", "x": "y" * 101}, "at most 100 characters"),
        ({"model": "m", **{f"k{i}": i for i in range(16)}}, "an object of 17 entries, more than 16"),
        ({"model": "m", "p": {f"k{i}": "v" * 90 for i in range(6)}}, "bytes of JSON, more than 512: shorten it"),
    ],
)
def test_encode_rejects_recipes_that_cannot_travel(recipe, match):
    with pytest.raises(ValueError, match=match):
        encode(["a", "b", "c"], student_recipe=recipe)
    with pytest.raises(ValueError, match="travel with the class names"):
        encode(student_recipe={"model": "m"})


HOSTILE_RECIPES = [  # (the recipe line of a section for C = 3, the message)
    (b"{", "the recipe is not ASCII JSON"),
    (b'{"model":"m"', "the recipe is not ASCII JSON"),
    ('{"model":"m\u00e9"}'.encode(), "the recipe is not ASCII JSON"),
    (b'{"model":"m","x":NaN}', "the recipe is not ASCII JSON \\(NaN is not a number a recipe may hold"),
    (b'{"model":"m","x":Infinity}', "the recipe is not ASCII JSON"),
    (b'["model"]', "the recipe must be an object"),
    (b'{"model":"m","x":{"y":{"z":1}}}', "recipe entry 'y' is a dict"),
    (b'{"x":1}', "the recipe's model 'None' is not a model name"),
    (b'{"model":"../etc"}', "the recipe's model '../etc' is not a model name"),
    (b'{"model":"' + b"m" * 520 + b'"}', "the recipe is 532 bytes, more than 512"),
]


@pytest.mark.parametrize(("line", "match"), HOSTILE_RECIPES)
def test_hostile_recipes_are_rejected_with_the_problem_named(line, match):
    data = forge_v2(section(b"\n\n" + line + b"\na\nb\nc"), body_of(), n=50, k=7, c=3, version=3)
    with pytest.raises(PayloadError, match=f"class-names section: {match}"):
        read_header(data)


def test_a_format_3_section_needs_its_recipe_line():
    """Format 2 bytes relabelled as format 3: the first name would be read as the recipe, and one name is missing."""
    with pytest.raises(PayloadError, match="holds 2 class names but the header says C=3"):
        read_header(forge_v2(section(b"\n\ncat\ndog\nfox"), body_of(), n=50, k=7, c=3, version=3))
    assert read_header(forge_v2(section(b"\n\n\ncat\ndog\nfox"), body_of(), n=50, k=7, c=3,
                                version=3))["student_recipe"] is None  # an empty line: no recipe  # fmt: skip
