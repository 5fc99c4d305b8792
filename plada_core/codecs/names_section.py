"""The class-names section of a format-2/3 payload: what the labels mean, which task and release they are, and
(format 3) which student the publisher recommends.

A client holds only the pool and the payload, so the payload names its C classes (label ``i`` is
``class_names[i]``) and, when the publisher gave them, the task and the release version. A format-3 payload also
carries the publisher's *student recipe* (the model, input and training settings its predicted accuracy was
measured with, and that prediction: ``plada_core.recipe``), so a client that names no model of its own trains
the one the accuracy is about. The section sits
between the container's header and the codec's body (``plada_core.payload``); it is not a body codec, but
it shares their job (bytes to values, untrusted input), hence its home here.

Section = ``encoding`` (u8) + ``length`` (u32, little endian) + ``length`` stored bytes. The *text* is UTF-8
``task + "\\n" + version + "\\n" + name_0 + "\\n" + … + name_(C-1)`` (an absent task or version is empty); in
format 3 a ``recipe`` line follows the version: ``task + "\\n" + version + "\\n" + recipe + "\\n" + name_0 …``.
``encoding`` 0 stores the text as is; 1 stores it as one Zstd frame (level 19, no checksum), which the
encoder writes only when that is strictly smaller.

Limits, checked on both sides (the decoder raises :class:`NamesProblem`, the container words it):

- exactly C names, each non-empty, at most 256 bytes of UTF-8, without control characters (Unicode
  category Cc: U+0000–U+001F and U+007F–U+009F, so no newline); the text must be valid UTF-8;
- task and version empty, or matching ``[A-Za-z0-9][A-Za-z0-9._-]{0,99}`` (a release path segment);
- the recipe is compact JSON (``json.dumps(recipe, sort_keys=True, separators=(",", ":"))``, ASCII, at most
  512 bytes): an object with a ``model`` (a release name) and at most 16 entries whose keys match
  ``[a-z][a-z0-9_]{0,31}`` and whose values are strings (at most 100 characters, no control characters),
  integers, finite numbers, booleans, or one level of objects under the same rules (``preprocess``, ``train``);
- the text is at most ``202 + 257 * C`` bytes (``715 + 257 * C`` in format 3; the most those limits allow):
  stored text longer than that is refused, and a Zstd frame is decompressed in pieces and refused as soon as
  it grows past it.
"""

from __future__ import annotations

import json
import math
import re
import struct
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

import zstandard

from plada_core.codecs.zstd_frame import bounded_decompress

__all__ = ["MAX_NAME_BYTES", "MAX_RECIPE_BYTES", "PREFIX", "STORED", "ZSTD", "Names", "NamesProblem", "decode_section",
           "encode_section", "max_text_size"]

PREFIX = struct.Struct("<BI")  # encoding, stored length
STORED, ZSTD = 0, 1
MAX_NAME_BYTES = 256
_MAX_LABEL_BYTES = 100  # task and version
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # the release-name pattern (plada_core.io.releases)
_SHOWN = 40  # characters of a bad name quoted in a message
MAX_RECIPE_BYTES = 512
_RECIPE_ENTRIES = 16
_RECIPE_KEY = re.compile(r"[a-z][a-z0-9_]{0,31}")
_RECIPE_TEXT = 100  # characters of a string value


class NamesProblem(ValueError):
    """Class names, a task or a version that cannot travel; the message names the offender and the fix.

    Raised by the encoder for bad inputs and by the decoder for a bad section, which the container reports
    as the error :meth:`report` words.
    """

    fix = "the payload is corrupt or forged: re-send it, or ask its publisher to rebuild it"

    def report(self) -> str:
        """The message for a section that failed to decode."""
        return f"class-names section: {self}; {self.fix}"


class _Worded(NamesProblem):
    """A decoder failure whose message already names the section and says what to do."""

    def report(self) -> str:
        return str(self)


@dataclass(frozen=True)
class Names:
    """A decoded section: ``class_names[i]`` names label ``i``; ``task``, ``version`` and ``recipe`` (the
    recommended student, format 3) are None when absent."""

    class_names: tuple[str, ...]
    task: str | None
    version: str | None
    recipe: dict | None = None


def max_text_size(n_classes: int, recipe: bool = False) -> int:
    """Most text bytes C classes allow: task and version with their newlines, (``recipe``: the recipe line),
    then C names and C - 1 newlines."""
    return 2 * (_MAX_LABEL_BYTES + 1) + recipe * (MAX_RECIPE_BYTES + 1) + n_classes * (MAX_NAME_BYTES + 1) - 1


def _shown(text: str) -> str:
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "…")


def _check_label(value: str, what: str) -> None:
    if value and not _LABEL.fullmatch(value):
        raise NamesProblem(
            f"{what} {_shown(value)} is not a release name: use 1 to 100 of A-Z a-z 0-9 . _ - "
            "starting with a letter or digit"
        )


def _check_name(name: str, position: int) -> bytes:
    """The name's UTF-8, or NamesProblem naming what is wrong with class ``position``."""
    if not name:
        raise NamesProblem(f"class name {position} is empty: give every class a name")
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError:
        raise NamesProblem(f"class name {position} ({_shown(name)}) is not valid Unicode text: fix the name") from None
    if len(raw) > MAX_NAME_BYTES:
        raise NamesProblem(
            f"class name {position} ({_shown(name)}) is {len(raw)} bytes of UTF-8, more than {MAX_NAME_BYTES}: "
            "shorten it"
        )
    control = next((c for c in name if unicodedata.category(c) == "Cc"), None)
    if control is not None:
        raise NamesProblem(
            f"class name {position} ({_shown(name)}) holds the control character U+{ord(control):04X}: "
            "remove line breaks, tabs and other control characters from it"
        )
    return raw


def encode_section(
    class_names: Iterable[str], n_classes: int, task: str | None, version: str | None, recipe: dict | None = None
) -> bytes:
    """The section for validated inputs; raises :class:`NamesProblem` (a ValueError) for names that cannot travel.

    With a ``recipe`` the section has format 3's recipe line (the container then says version 3)."""
    if isinstance(class_names, (str, bytes)) or not hasattr(class_names, "__iter__"):
        raise NamesProblem(f"class_names must be a list of strings, got {type(class_names).__name__}")
    class_names = list(class_names)
    if len(class_names) != n_classes:
        raise NamesProblem(f"got {len(class_names)} class names for n_classes={n_classes}: pass one name per class")
    parts = []
    for what, value in (("task", task), ("version", version)):
        if value is not None and not isinstance(value, str):
            raise NamesProblem(f"{what} must be a string or None, got {type(value).__name__}")
        _check_label(value or "", what)
        parts.append((value or "").encode("ascii"))
    if recipe is not None:
        parts.append(recipe_text(recipe))
    for position, name in enumerate(class_names):
        if not isinstance(name, str):
            raise NamesProblem(f"class name {position} must be a string, got {type(name).__name__}")
        parts.append(_check_name(name, position))
    text = b"\n".join(parts)
    # no zstd checksum: the container's checksum covers the section
    packed = zstandard.ZstdCompressor(level=19, write_checksum=False).compress(text)
    encoding, stored = (ZSTD, packed) if len(packed) < len(text) else (STORED, text)
    return PREFIX.pack(encoding, len(stored)) + stored


def decode_section(encoding: int, stored: bytes, n_classes: int, recipe: bool = False) -> Names:
    """The names in an untrusted section's ``stored`` bytes, for a header saying C = ``n_classes`` (``recipe``:
    a format-3 section, with the recipe line).

    Raises :class:`NamesProblem` for anything an encoder would not write; memory stays within
    :func:`max_text_size` (plus the decompressor's bounded overshoot).
    """
    limit = max_text_size(n_classes, recipe)
    if encoding == STORED:
        if len(stored) > limit:
            raise NamesProblem(f"the section stores {len(stored)} bytes, more than the {limit} that C={n_classes} "
                               "names allow")
        text = stored
    elif encoding == ZSTD:
        text = bounded_decompress(stored, limit, what="class-names section", allowance=f"C={n_classes} names",
                                  error=_Worded)
    else:
        raise _Worded(f"unknown class-names encoding {encoding} (this build knows 0 = stored, 1 = zstd); "
                           "upgrade plada to a version that reads it")
    heads = 2 + recipe  # the lines before the names
    newlines = text.count(b"\n")  # counted before splitting: a forged text may not make C+3 objects more
    if newlines != n_classes + heads - 1:
        raise NamesProblem(f"the section holds {max(newlines - heads + 1, 0)} class names but the header says "
                           f"C={n_classes}")  # fmt: skip
    fields = text.split(b"\n")
    task, version = (_decode_label(raw, what) for raw, what in zip(fields, ("task", "version")))
    found = _decode_recipe(fields[2]) if recipe else None
    names = []
    for position, raw in enumerate(fields[heads:]):
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise NamesProblem(f"class name {position} is not valid UTF-8 ({err.reason} at byte {err.start})") from None
        _check_name(name, position)
        names.append(name)
    return Names(tuple(names), task, version, found)


def _decode_label(raw: bytes, what: str) -> str | None:
    if len(raw) > _MAX_LABEL_BYTES:
        raise NamesProblem(f"{what} is {len(raw)} bytes, more than {_MAX_LABEL_BYTES}")
    text = raw.decode("ascii", errors="replace")  # the pattern admits ASCII only; a replacement char fails it
    _check_label(text, what)
    return text or None


# --- the student recipe (format 3) --------------------------------------------------------------------------


def _check_recipe_value(key: str, value, nested: bool) -> None:
    if isinstance(value, int):  # bool included
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NamesProblem(f"recipe entry {key!r} is {value}: use a finite number")
        return
    if isinstance(value, str):
        if len(value) > _RECIPE_TEXT or any(unicodedata.category(c) == "Cc" for c in value):
            raise NamesProblem(f"recipe entry {key!r} ({_shown(value)}) must be at most {_RECIPE_TEXT} characters "
                               "without control characters")  # fmt: skip
        return
    if isinstance(value, dict) and not nested:
        _check_recipe_entries(value, nested=True)
        return
    raise NamesProblem(f"recipe entry {key!r} is a {type(value).__name__}: use a string, a number, a boolean"
                       + ("" if nested else " or an object of those"))  # fmt: skip


def _check_recipe_entries(entries: dict, nested: bool) -> None:
    if len(entries) > _RECIPE_ENTRIES:
        raise NamesProblem(f"the recipe holds an object of {len(entries)} entries, more than {_RECIPE_ENTRIES}")
    for key, value in entries.items():
        if not isinstance(key, str) or not _RECIPE_KEY.fullmatch(key):
            raise NamesProblem(f"recipe key {_shown(str(key))} is not a lower-case identifier of at most 32 "
                               "characters")  # fmt: skip
        _check_recipe_value(key, value, nested)


def _check_recipe(recipe) -> None:
    if not isinstance(recipe, dict):
        raise NamesProblem(f"the recipe must be an object (a dict), got {type(recipe).__name__}")
    _check_recipe_entries(recipe, nested=False)
    model = recipe.get("model")
    if not isinstance(model, str) or not _LABEL.fullmatch(model):
        raise NamesProblem(f"the recipe's model {_shown(str(model))} is not a model name: give a registered model "
                           "name (A-Z a-z 0-9 . _ -)")  # fmt: skip


def recipe_text(recipe: dict) -> bytes:
    """The recipe line of a format-3 section: compact, key-sorted ASCII JSON; NamesProblem if it cannot travel."""
    _check_recipe(recipe)
    text = json.dumps(recipe, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("ascii")
    if len(text) > MAX_RECIPE_BYTES:
        raise NamesProblem(f"the recipe is {len(text)} bytes of JSON, more than {MAX_RECIPE_BYTES}: shorten it")
    return text


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number a recipe may hold")


def _decode_recipe(raw: bytes) -> dict | None:
    if not raw:
        return None
    if len(raw) > MAX_RECIPE_BYTES:
        raise NamesProblem(f"the recipe is {len(raw)} bytes, more than {MAX_RECIPE_BYTES}")
    try:
        recipe = json.loads(raw.decode("ascii"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as err:
        raise NamesProblem(f"the recipe is not ASCII JSON ({str(err)[:80]})") from None
    _check_recipe(recipe)
    return recipe
