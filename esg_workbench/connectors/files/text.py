"""Bytes to text: a file's decompressed byte stream, its encoding (detected or set), and
the stream as UTF-8 for Arrow's readers, with its last lines held back where a footer
(a totals row, `skip_footer`) is to be dropped."""

from __future__ import annotations

import codecs
import dataclasses
from typing import Callable

import pyarrow as pa

from esg_workbench.connectors.files.model import BadFile, FileEntry, FileStore

#: byte order marks, longest first (UTF-32 LE starts like UTF-16 LE)
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"),
)
FALLBACK = "cp1252"


class Replay:
    """A stream whose first bytes were read already (to find the header): they are
    handed out again before the rest."""

    def __init__(self, head: bytes, rest):
        self._head = bytearray(head)  # deleting from its front is cheap
        self._rest = rest
        self.closed = False

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self._head:
            if n is None or n < 0:
                out = bytes(self._head) + bytes(self._rest.read())
                self._head = bytearray()
                return out
            out = bytes(self._head[:n])
            del self._head[:n]
            return out
        return bytes(self._rest.read(n))

    def close(self) -> None:
        self.closed = True
        self._rest.close()


def sequential(store: FileStore, entry: FileEntry, gz: bool):
    """A decompressed byte stream of the file (an Arrow stream for gzip)."""
    raw = store.open(entry)
    if not gz:
        return raw
    return pa.CompressedInputStream(pa.PythonFile(raw, mode="r"), "gzip")


def read_head(stream, lines: int, limit: int = 16 << 20, min_bytes: int = 0) -> tuple[bytes, bool]:
    """At least `lines` complete lines and `min_bytes` (or all of a short file), in 64 KiB
    steps, and whether that is the whole file."""
    head = b""
    while (head.count(b"\n") < lines or len(head) < min_bytes) and len(head) < limit:
        block = stream.read(1 << 16)
        if not block:
            return head, True
        head += bytes(block)
    return head, False


@dataclasses.dataclass(frozen=True)
class Encoding:
    name: str  # a Python codec
    bom: int = 0  # bytes of byte order mark to skip
    note: str | None = None  # a warning for the run (a guessed encoding)

    @property
    def is_utf8(self) -> bool:
        return codecs.lookup(self.name).name == "utf-8"


def _utf16_without_bom(head: bytes) -> str | None:
    """UTF-16 without a BOM: text in it has a zero byte beside most ASCII characters."""
    sample = head[:4096]
    if len(sample) < 4:
        return None
    even, odd = sample[0::2].count(0), sample[1::2].count(0)
    half = len(sample) // 2
    if odd > half * 0.3 and even < half * 0.05:
        return "utf-16-le"
    if even > half * 0.3 and odd < half * 0.05:
        return "utf-16-be"
    return None


def _valid_utf8(head: bytes, complete: bool) -> bool:
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        decoder.decode(head, final=complete)  # a character cut at the end of the head is fine
    except UnicodeDecodeError:
        return False
    return True


def detect_encoding(head: bytes, path: str, wanted: str | None, complete: bool) -> Encoding:
    """The encoding of a text file from its first bytes: a byte order mark says it; else
    the `encoding` option; else UTF-8 when the bytes are valid UTF-8 (UTF-16 when they look
    like it); else Windows-1252 with a warning, or a refusal that names the option."""
    for bom, name in _BOMS:
        if head.startswith(bom):
            return Encoding(name, len(bom))
    if wanted:
        return Encoding(wanted)
    utf16 = _utf16_without_bom(head)
    if utf16:
        return Encoding(utf16, note=f"{path} has no byte order mark but reads as {utf16.upper()}.")
    if _valid_utf8(head, complete):
        return Encoding("utf-8")
    first = _first_invalid(head)
    if any(ord(c) > 127 and c != "\ufffd" for c in head.decode("utf-8", errors="replace")):
        # UTF-8 letters and other bytes in one file: no single encoding reads it right
        raise BadFile(f"{path} mixes UTF-8 text with bytes that are not UTF-8 (the first at byte {first}).",
                      hint="Save the file in one encoding (UTF-8), or set the connector option encoding to the "
                           "one most of it is in, then use Retry failed chunks.")
    try:
        head.decode(FALLBACK)
    except UnicodeDecodeError:
        raise BadFile(f"{path} is not UTF-8 text, and not Windows-1252 either: its encoding is unknown.",
                      hint="Set the connector option encoding (e.g. latin-1, cp1250, utf-16), "
                           "then use Retry failed chunks.") from None
    return Encoding(FALLBACK, note=(
        f"{path} is not UTF-8 (byte {first} is not); it was read as Windows-1252 (cp1252). "
        "If its letters look wrong, set the option encoding (e.g. latin-1, cp1250)."))


def _first_invalid(data: bytes) -> int:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start + 1
    return 0


def decode_all(data: bytes, path: str, wanted: str | None) -> tuple[str, Encoding]:
    encoding = detect_encoding(data, path, wanted, complete=True)
    try:
        return data[encoding.bom:].decode(encoding.name), encoding
    except UnicodeDecodeError as exc:
        raise not_in_encoding(path, encoding, exc.start + encoding.bom) from None


def not_in_encoding(path: str, encoding: Encoding, at: int | None = None) -> BadFile:
    where = f" at byte {at + 1}" if at is not None else ""
    return BadFile(f"{path} is not valid {encoding.name} text{where} (it starts as {encoding.name}).",
                   hint="Set the connector option encoding to the file's encoding (e.g. cp1252, latin-1), "
                        "then use Retry failed chunks.")


class Utf8Stream:
    """The file's text as UTF-8 bytes, from a stream in another encoding."""

    def __init__(self, raw, encoding: Encoding, path: str):
        self._raw = raw
        self._encoding = encoding
        self._path = path
        self._decoder = codecs.getincrementaldecoder(encoding.name)()
        self._skip = encoding.bom
        self._buffer = bytearray()
        self._done = False
        self._offset = 0
        self.closed = False

    def readable(self) -> bool:
        return True

    def _fill(self, n: int) -> None:
        while not self._done and len(self._buffer) < n:
            block = bytes(self._raw.read(1 << 20))
            if self._skip:
                cut = min(self._skip, len(block))
                block, self._skip = block[cut:], self._skip - cut
            try:
                text = self._decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:
                raise not_in_encoding(self._path, self._encoding, self._offset + exc.start) from None
            self._offset += len(block)
            self._buffer += text.encode("utf-8")
            self._done = not block

    def read(self, n: int = -1) -> bytes:
        want = 1 << 62 if n is None or n < 0 else n
        self._fill(want)
        out = bytes(self._buffer[:want])
        del self._buffer[:want]
        return out

    def close(self) -> None:
        self.closed = True
        self._raw.close()


class HoldLastLines:
    """A UTF-8 stream that holds its last `keep` non-blank lines back until the end, then
    lets `drop(lines) -> how many to drop` remove some of them (a footer)."""

    def __init__(self, raw, keep: int, drop: Callable[[list[bytes]], int]):
        self._raw = raw
        self._keep = keep
        self._drop = drop
        self._pending = b""  # bytes not yet handed out: the last `keep` non-blank lines and an unfinished one
        self._out = bytearray()  # ready to hand out (deleting from its front is cheap)
        self._done = False
        self.closed = False

    def readable(self) -> bool:
        return True

    def _held_from(self) -> int:
        """Where the last `keep` non-blank complete lines of the pending bytes start, or
        -1 when it holds fewer (found from the end: a few rfind calls per block)."""
        pos = self._pending.rfind(b"\n")  # the end of the last complete line
        count = 0
        while pos >= 0:
            start = self._pending.rfind(b"\n", 0, pos)
            if self._pending[start + 1:pos].strip():
                count += 1
                if count == self._keep:
                    return start + 1
            pos = start
        return -1

    def _hand_out(self, data: bytes) -> None:
        self._out += data

    def _finish(self) -> None:
        lines = self._pending.split(b"\n")
        filled = [i for i, line in enumerate(lines) if line.strip()]
        n = self._drop([lines[i] for i in filled]) if filled else 0
        if n:
            self._hand_out(b"".join(line + b"\n" for line in lines[:filled[len(filled) - n]]))
        else:
            self._hand_out(self._pending)
        self._pending = b""
        self._done = True

    def read(self, n: int = -1) -> bytes:
        want = 1 << 62 if n is None or n < 0 else n
        while len(self._out) < want and not self._done:
            block = bytes(self._raw.read(1 << 20))
            if not block:
                self._finish()
                break
            self._pending += block
            cut = self._held_from()
            if cut > 0:
                self._hand_out(self._pending[:cut])
                self._pending = self._pending[cut:]
        out = bytes(self._out[:want])
        del self._out[:want]
        return out

    def close(self) -> None:
        self.closed = True
        self._raw.close()
