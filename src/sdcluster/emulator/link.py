"""The emulated network link of one HTTP connection: a throughput cap, and request bodies read as
streams (never buffered whole) so uploads of any size cost the emulator a block of memory.

A real TCP stream to Cloud Storage is capped by its window and round-trip time, which is why
parallel streams fill a link that one stream cannot. ``Link`` models that cap per connection with a
token bucket on the bytes it reads and writes (``Knobs.storage_mib_s``; 0 = loopback speed). The
bucket is read on every block, so a changed knob takes effect at once.

Example::

    link = Link(lambda: world.knobs.storage_mib_s)
    body = BodyReader(handler.rfile, handler.headers, link)
    while block := body.read(1 << 20):
        ...
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

MIB = 1024 * 1024
BLOCK = 256 * 1024  # what one read or write moves while capped (about one TCP window's worth)
_BURST = 4 * BLOCK  # a connection may run ahead of its rate by this much (catching up a late wake-up)


class Link:
    """A token bucket shared by the reads and writes of one connection."""

    def __init__(self, mib_s: Callable[[], float]) -> None:
        self._mib_s = mib_s
        self._tokens = float(_BURST)
        self._last = time.monotonic()

    @property
    def capped(self) -> bool:
        return self._mib_s() > 0

    def take(self, n: int) -> None:
        """Wait until ``n`` bytes may pass."""
        rate = self._mib_s() * MIB
        if rate <= 0:
            return
        now = time.monotonic()
        self._tokens = min(float(_BURST), self._tokens + (now - self._last) * rate)
        self._last = now
        self._tokens -= n
        if self._tokens < 0:
            time.sleep(-self._tokens / rate)

    def block(self, wanted: int) -> int:
        """How much to move per read or write: small steps while capped, so the cap is smooth."""
        return min(wanted, BLOCK) if self.capped else wanted

    def write(self, out: io.BufferedIOBase, data: bytes) -> None:
        """Send ``data`` through the cap."""
        view = memoryview(data)
        step = self.block(len(view)) or 1
        for start in range(0, len(view), step):
            piece = view[start : start + step]
            self.take(len(piece))
            out.write(piece)


class BodyReader:
    """The request body as a stream: ``Content-Length`` or chunked, read through the link's cap.

    ``received`` counts body bytes read so far; ``complete`` tells whether the client sent all it
    announced (False when the connection dropped mid-body).
    """

    def __init__(self, rfile: io.BufferedIOBase, headers: Any, link: Link) -> None:
        self._rfile = rfile
        self._link = link
        self._chunked = "chunked" in (headers.get("Transfer-Encoding") or "").lower()
        self._left = int(headers.get("Content-Length") or 0) if not self._chunked else 0
        self._chunk_left = 0
        self._chunked_done = not self._chunked
        self.received = 0
        self.broken = False

    @property
    def complete(self) -> bool:
        return not self.broken and self._left == 0 and self._chunked_done

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (-1: the rest); b"" at the end of the body or when the peer left."""
        if size < 0:
            parts = []
            while block := self.read(MIB):
                parts.append(block)
            return b"".join(parts)
        if self._chunked:
            return self._read_chunked(size)
        want = self._link.block(min(size, self._left))
        if want <= 0:
            return b""
        self._link.take(want)
        data = self._read_raw(want)
        self._left -= len(data)
        return data

    def _read_raw(self, n: int) -> bytes:
        try:
            data = self._rfile.read(n)
        except OSError:
            data = b""
        if len(data) < n:
            self.broken = True
            self._left = 0
            self._chunked_done = True
        self.received += len(data)
        return data

    def _read_chunked(self, size: int) -> bytes:
        if self._chunked_done:
            return b""
        if self._chunk_left == 0:
            line = self._rfile.readline()
            try:
                self._chunk_left = int(line.split(b";", 1)[0].strip() or b"x", 16)
            except ValueError:
                self.broken, self._chunked_done = True, True
                return b""
            if self._chunk_left == 0:
                while self._rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                self._chunked_done = True
                return b""
        want = self._link.block(min(size, self._chunk_left))
        self._link.take(want)
        data = self._read_raw(want)
        self._chunk_left -= len(data)
        if self._chunk_left == 0 and not self.broken:
            self._rfile.readline()  # the CRLF after each chunk
        return data

    def drain(self) -> None:
        """Read and drop what the client still sends, so it reads the answer instead of a reset."""
        while self.read(MIB):
            pass
