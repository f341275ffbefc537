"""Sans-IO link faults: corrupt or drop whole frames on their way across the serial link.

One :class:`LinkFaults` sits on each direction of a virtual meter's link. It works on frames (COBS bytes ending in
0x00) so a test can say "corrupt the next 3 frames" and know exactly what the receiver will see: a corrupted frame
is rejected by the receiver's codec (bad CRC or bad COBS) and the frames after it arrive intact. Random choices come
from its own ``random.Random(seed)``, so a run is reproducible.
"""

from __future__ import annotations

import random

from protocol.frames import DELIMITER


class LinkFaults:
    """Frame-level fault injection for one direction. Not thread-safe: the runner holds its lock around it."""

    def __init__(self, seed: int | str = 0) -> None:
        self._rng = random.Random(f"{seed}/link")
        self.corrupt_next = 0
        """Corrupt (flip one bit in) this many of the next frames."""
        self.drop_next = 0
        """Drop this many of the next frames."""
        self.corrupt_rate = 0.0
        """Probability that any frame is corrupted."""
        self.drop_rate = 0.0
        """Probability that any frame is dropped."""
        self.corrupted = 0
        self.dropped = 0
        self.frames = 0
        self._tail = b""

    def _one(self, frame: bytes) -> bytes | None:
        if frame == DELIMITER:  # a resync byte is not a frame; faults apply to frames
            return frame
        self.frames += 1
        if self.drop_next > 0 or (self.drop_rate > 0 and self._rng.random() < self.drop_rate):
            self.drop_next = max(0, self.drop_next - 1)
            self.dropped += 1
            return None
        if self.corrupt_next > 0 or (self.corrupt_rate > 0 and self._rng.random() < self.corrupt_rate):
            self.corrupt_next = max(0, self.corrupt_next - 1)
            self.corrupted += 1
            body = bytearray(frame)
            # flip one bit anywhere but the delimiter, so the frames after this one stay intact
            pos = self._rng.randrange(len(body) - 1) if len(body) > 1 else 0
            body[pos] ^= 1 << self._rng.randrange(8)
            return bytes(body)
        return frame

    def apply(self, frames: list[bytes]) -> list[bytes]:
        """Faults applied to whole frames (each ending in 0x00); returns what goes on the wire."""
        if not (self.corrupt_next or self.drop_next or self.corrupt_rate or self.drop_rate):
            self.frames += sum(1 for f in frames if f != DELIMITER)
            return frames
        out = []
        for frame in frames:
            result = self._one(frame)
            if result is not None:
                out.append(result)
        return out

    def apply_stream(self, data: bytes) -> bytes:
        """Faults applied to a byte stream: complete frames pass (or not) now, a partial one waits for its 0x00."""
        buf = self._tail + data
        cut = buf.rfind(DELIMITER) + 1
        self._tail = buf[cut:]
        if not cut:
            return b""
        parts = [p + DELIMITER for p in buf[: cut - 1].split(DELIMITER)]
        return b"".join(self.apply(parts))

    def reset_stream(self) -> None:
        """Forget a partial frame (the port was closed)."""
        self._tail = b""
