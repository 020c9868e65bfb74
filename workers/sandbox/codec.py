"""The plain-data channel between the sandbox's judge and its candidate (stdlib only).

Values cross as JSON with a tag for every type JSON cannot tell apart: ``None``, ``bool``,
``int``, ``float`` and ``str`` are JSON's own; a ``list`` is a JSON array; everything else is a
one-key object: ``{"t": [...]}`` tuple, ``{"s": [...]}`` set, ``{"f": [...]}`` frozenset,
``{"d": [[k, v], ...]}`` dict, ``{"b": "hex"}`` bytes, ``{"c": [re, im]}`` complex.

Only those exact types are encoded (a subclass of ``int`` with its own ``__eq__`` is refused),
and decoding builds fresh builtin objects from the text alone, so nothing the sender controls
runs on the receiving side. Frames are a 4-byte big-endian length and the JSON text; a frame
over :data:`MAX_FRAME` bytes, nesting deeper than :data:`MAX_DEPTH`, or anything that is not
this format is a :class:`ChannelError`.

This file is imported by the sandbox harness (``_child.py``, by file name, as the top-level
module ``codec``) before it seals itself (``python -I -S``), so it must import nothing outside
the standard library and nothing of this package.
"""

from __future__ import annotations

import json
import os
from typing import Any

__all__ = ["MAX_DEPTH", "MAX_FRAME", "ChannelError", "decode", "encode", "read_frame", "write_frame"]

MAX_FRAME = 8 << 20
"""Largest frame (bytes of JSON) either side accepts."""
MAX_DEPTH = 64
"""Deepest nesting of lists, tuples, sets and dicts a value may have."""

_SCALARS = (type(None), bool, int, float, str)


class ChannelError(ValueError):
    """A value that cannot cross, or bytes on the channel that are not a valid frame."""


def _enc(v: Any, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise ChannelError(f"the value is nested deeper than {MAX_DEPTH} levels")
    t = type(v)
    if t in _SCALARS:
        return v
    if t is list:
        return [_enc(x, depth + 1) for x in v]
    if t is tuple:
        return {"t": [_enc(x, depth + 1) for x in v]}
    if t is set:
        return {"s": [_enc(x, depth + 1) for x in v]}
    if t is frozenset:
        return {"f": [_enc(x, depth + 1) for x in v]}
    if t is dict:
        return {"d": [[_enc(k, depth + 1), _enc(x, depth + 1)] for k, x in v.items()]}
    if t is bytes or t is bytearray:
        return {"b": bytes(v).hex()}
    if t is complex:
        return {"c": [v.real, v.imag]}
    raise ChannelError(f"a {t.__name__} object cannot cross the plain-data channel")


def encode(value: Any) -> Any:
    """``value`` as JSON-ready data; raises ChannelError for anything but plain data."""
    return _enc(value, 0)


def _dec(v: Any, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise ChannelError(f"a value nested deeper than {MAX_DEPTH} levels")
    t = type(v)
    if t in _SCALARS:
        return v
    if t is list:
        return [_dec(x, depth + 1) for x in v]
    if t is not dict or len(v) != 1:
        raise ChannelError("a malformed value on the channel")
    (tag, body), = v.items()
    if tag == "b" and type(body) is str:
        try:
            return bytes.fromhex(body)
        except ValueError:
            raise ChannelError("malformed bytes on the channel") from None
    if tag == "c" and type(body) is list and len(body) == 2 and all(type(x) in (int, float) for x in body):
        return complex(body[0], body[1])
    if type(body) is not list:
        raise ChannelError("a malformed value on the channel")
    items = [_dec(x, depth + 1) for x in body]
    try:
        if tag == "t":
            return tuple(items)
        if tag == "s":
            return set(items)
        if tag == "f":
            return frozenset(items)
        if tag == "d":
            if not all(type(p) is list and len(p) == 2 for p in items):
                raise ChannelError("a malformed dict on the channel")
            return {k: x for k, x in items}
    except TypeError:  # an unhashable key or member
        raise ChannelError("an unhashable set member or dict key on the channel") from None
    raise ChannelError(f"an unknown tag {str(tag)[:10]!r} on the channel")


def decode(data: Any) -> Any:
    """The value ``data`` (parsed JSON) stands for; raises ChannelError when malformed."""
    return _dec(data, 0)


def _parse(text: bytes) -> Any:
    # Refuse deep nesting before the recursive parser sees it: count brackets outside strings.
    depth = deepest = 0
    in_str = esc = False
    if text.count(b"[") + text.count(b"{") > MAX_DEPTH:  # only then is a scan needed
        for ch in text:
            if in_str:
                if esc:
                    esc = False
                elif ch == 0x5C:
                    esc = True
                elif ch == 0x22:
                    in_str = False
            elif ch == 0x22:
                in_str = True
            elif ch in (0x5B, 0x7B):
                depth += 1
                if depth > deepest:
                    deepest = depth
                    if deepest > 2 * MAX_DEPTH + 4:
                        raise ChannelError(f"a frame nested deeper than {MAX_DEPTH} levels")
            elif ch in (0x5D, 0x7D):
                depth -= 1
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:  # includes UnicodeDecodeError and huge ints
        raise ChannelError(f"a frame that is not valid JSON ({type(e).__name__})") from None


def write_frame(fd: int, message: Any) -> None:
    """Send one message (JSON-ready data); raises ChannelError when it is too big."""
    data = json.dumps(message, separators=(",", ":")).encode("utf-8", "surrogatepass")
    if len(data) > MAX_FRAME:
        raise ChannelError(f"a message of {len(data)} bytes is over the channel's {MAX_FRAME} byte limit")
    view = memoryview(len(data).to_bytes(4, "big") + data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_exact(fd: int, n: int) -> bytes:
    chunks: list[bytes] = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError("the other side closed the channel")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int) -> Any:
    """One message (parsed JSON); EOFError when the other side is gone, ChannelError when the
    bytes are not a valid frame."""
    size = int.from_bytes(_read_exact(fd, 4), "big")
    if size > MAX_FRAME:
        raise ChannelError(f"a frame of {size} bytes is over the channel's {MAX_FRAME} byte limit")
    return _parse(_read_exact(fd, size))
