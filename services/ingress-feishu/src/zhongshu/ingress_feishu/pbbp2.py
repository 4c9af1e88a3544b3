"""The long connection's frame, ``pbbp2.Frame`` (proto2), encoded by hand, pure: nine scalar
fields and repeated key/value headers do not justify a protobuf dependency. Field numbers are
those of lark-oapi's ``pbbp2.proto`` (platform-protocols.md §1.3)."""

from __future__ import annotations

from dataclasses import dataclass, field

METHOD_CONTROL = 0
METHOD_DATA = 1

_VARINT, _LENGTH = 0, 2


class FrameError(ValueError):
    """Bytes that are not a pbbp2 frame."""


@dataclass
class Frame:
    seq_id: int = 0
    log_id: int = 0
    service: int = 0
    method: int = METHOD_CONTROL
    headers: list[tuple[str, str]] = field(default_factory=list)
    payload_encoding: str | None = None
    payload_type: str | None = None
    payload: bytes | None = None
    log_id_new: str | None = None

    def header(self, key: str) -> str | None:
        return next((value for k, value in self.headers if k == key), None)

    def with_header(self, key: str, value: str) -> None:
        self.headers = [(k, v) for k, v in self.headers if k != key] + [(key, value)]

    def encode(self) -> bytes:
        out = bytearray()
        for number, value in ((1, self.seq_id), (2, self.log_id)):
            _key(out, number, _VARINT)
            _varint(out, value)
        for number, value in ((3, self.service), (4, self.method)):
            _key(out, number, _VARINT)
            _varint(out, value & 0xFFFFFFFFFFFFFFFF)  # int32: negatives as 10-byte varints
        for name, text in self.headers:
            inner = bytearray()
            _bytes(inner, 1, name.encode())
            _bytes(inner, 2, text.encode())
            _bytes(out, 5, bytes(inner))
        for number, optional in ((6, self.payload_encoding), (7, self.payload_type)):
            if optional is not None:
                _bytes(out, number, optional.encode())
        if self.payload is not None:
            _bytes(out, 8, self.payload)
        if self.log_id_new is not None:
            _bytes(out, 9, self.log_id_new.encode())
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> Frame:
        frame = cls()
        for number, value in _fields(data):
            if number == 1 and isinstance(value, int):
                frame.seq_id = value
            elif number == 2 and isinstance(value, int):
                frame.log_id = value
            elif number == 3 and isinstance(value, int):
                frame.service = _int32(value)
            elif number == 4 and isinstance(value, int):
                frame.method = _int32(value)
            elif number == 5 and isinstance(value, bytes):
                parts = {n: v for n, v in _fields(value) if isinstance(v, bytes)}
                frame.headers.append((parts.get(1, b"").decode(), parts.get(2, b"").decode()))
            elif number == 6 and isinstance(value, bytes):
                frame.payload_encoding = value.decode()
            elif number == 7 and isinstance(value, bytes):
                frame.payload_type = value.decode()
            elif number == 8 and isinstance(value, bytes):
                frame.payload = value
            elif number == 9 and isinstance(value, bytes):
                frame.log_id_new = value.decode()
        return frame


def _key(out: bytearray, number: int, wire_type: int) -> None:
    _varint(out, number << 3 | wire_type)


def _varint(out: bytearray, value: int) -> None:
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def _bytes(out: bytearray, number: int, value: bytes) -> None:
    _key(out, number, _LENGTH)
    _varint(out, len(value))
    out += value


def _int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise FrameError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    fields: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == _VARINT:
            value, pos = _read_varint(data, pos)
            fields.append((number, value))
        elif wire_type == _LENGTH:
            size, pos = _read_varint(data, pos)
            if pos + size > len(data):
                raise FrameError("truncated field")
            fields.append((number, data[pos : pos + size]))
            pos += size
        elif wire_type == 1:  # fixed64: not in this schema, skipped
            pos += 8
        elif wire_type == 5:  # fixed32
            pos += 4
        else:
            raise FrameError(f"unsupported wire type {wire_type}")
    if pos != len(data):
        raise FrameError("truncated fixed field")
    return fields
