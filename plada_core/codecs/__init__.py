"""Payload body codecs, registered by name in ``CODECS``; the container (``plada_core.payload``) records the
codec's id in the header, so old payloads keep decoding. Each module documents its body format:

- "paper-zstd19" (id 1, ``paper_zstd19``): the paper's baseline, sorted indices as tagged delta/run varints,
  labels run-length coded, Zstd level 19.
- "context-rc" (id 2, ``context_rc``): an adaptive binary range coder (``rangecoder``) under context models of
  gaps and labels, about 20 % smaller than "paper-zstd19" on clustered selections. Its decoder's work is
  bounded by the body length, not by the header's k.
- "context-rc2" (id 3, ``confusion_rc``): context-rc's gaps and bounds, with labels coded against a learned
  list of the labels each class is confused with; about 22 % smaller than "paper-zstd19" on the simulator.
- "layout-rc" (id 4, ``layout_rc``): positions coded block by block against the pool's *layout* (its
  contiguous class blocks, which the client holds with the pool), labels with context-rc2's model told where
  blocks start; about 25 % smaller than "paper-zstd19" on the simulator. Its body starts with the layout's
  digest, so a client with another layout gets a PayloadError, not wrong labels.

Helpers of the codecs and the container: ``rangecoder`` (the adaptive binary range coder), ``zstd_frame`` (one
Zstd frame from untrusted bytes, under a cap) and ``names_section`` (a format-2 payload's class names, task and
version; not a body codec). ``docs/payload-format.md`` describes every format for re-implementation.

A codec module exposes ``encode_body`` and ``decode_body`` with the signatures :class:`Codec` documents and
raises :class:`CorruptBody` for bytes it cannot decode. Modules here never import ``payload`` (it imports them).
"""

from __future__ import annotations

from plada_core.codecs import confusion_rc, context_rc, layout_rc, paper_zstd19
from plada_core.codecs.base import Codec, CorruptBody

__all__ = ["AUTO", "CODECS", "PAPER_CODEC", "Codec", "CorruptBody", "codec_names", "get_codec", "uses_layout"]

AUTO = "auto"  # the codec name for "every codec that can run, keep the smallest payload"
PAPER_CODEC = "paper-zstd19"  # the paper's baseline: the default of the pure functions (entry points default to AUTO)

CODECS: dict[str, Codec] = {
    PAPER_CODEC: Codec(codec_id=1, encode_body=paper_zstd19.encode_body, decode_body=paper_zstd19.decode_body),
    "context-rc": Codec(codec_id=2, encode_body=context_rc.encode_body, decode_body=context_rc.decode_body),
    # the name predates the module's; payloads, CLIs and saved settings spell it this way
    "context-rc2": Codec(codec_id=3, encode_body=confusion_rc.encode_body, decode_body=confusion_rc.decode_body),
    "layout-rc": Codec(codec_id=4, encode_body=layout_rc.encode_body, decode_body=layout_rc.decode_body,
                       check_layout=layout_rc.check_layout),
}


def get_codec(name: str) -> Codec:
    """The registered codec called ``name``."""
    if name not in CODECS:
        raise ValueError(f"unknown codec {name!r}; valid codecs: {sorted(CODECS)}")
    return CODECS[name]


def codec_names() -> dict[int, str]:
    """The registered codecs' names by wire id, in registration order."""
    return {codec.codec_id: name for name, codec in CODECS.items()}


def uses_layout(codec: str) -> bool:
    """Whether encoding with ``codec`` (a registered name or ``AUTO``) can use the pool's layout."""
    if codec == AUTO:
        return any(entry.needs_layout for entry in CODECS.values())
    return codec in CODECS and CODECS[codec].needs_layout
