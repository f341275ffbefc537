"""Sans-IO link faults: exactly the frames asked for are corrupted or lost, and nothing else changes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import frames
from sim.faults import LinkFaults


def wire(n: int) -> list[bytes]:
    return [frames.encode(frames.Ack(1, seq)) for seq in range(1, n + 1)]


def decoded(data: bytes) -> tuple[list[int], list[frames.FrameError]]:
    items = frames.Decoder().feed(data)
    acks = [i.seq for i in items if isinstance(i, frames.Ack)]
    return acks, [i for i in items if isinstance(i, frames.FrameError)]


def test_no_fault_passes_frames_untouched() -> None:
    faults = LinkFaults(1)
    assert faults.apply(wire(5)) == wire(5)
    assert faults.frames == 5


def test_corrupt_next_n_frames_are_rejected_by_the_codec_and_the_rest_survive() -> None:
    faults = LinkFaults(2)
    faults.corrupt_next = 3
    out = faults.apply([b"\x00", *wire(10)])  # the resync byte is not a frame
    acks, errors = decoded(b"".join(out))
    assert acks == [4, 5, 6, 7, 8, 9, 10]
    assert len(errors) >= 3
    assert faults.corrupted == 3 and faults.corrupt_next == 0


def test_drop_next_n_frames() -> None:
    faults = LinkFaults(3)
    faults.drop_next = 2
    acks, errors = decoded(b"".join(faults.apply(wire(6))))
    assert acks == [3, 4, 5, 6] and errors == []
    assert faults.dropped == 2


def test_rates_are_reproducible_from_the_seed() -> None:
    def run(seed: int) -> list[bytes]:
        faults = LinkFaults(seed)
        faults.drop_rate = 0.2
        faults.corrupt_rate = 0.2
        return faults.apply(wire(200))

    assert run(4) == run(4)
    assert run(4) != run(5)
    faults = LinkFaults(4)
    faults.drop_rate = 0.2
    faults.apply(wire(1000))
    assert 120 < faults.dropped < 280


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.integers(1, 40), max_size=20), st.integers(0, 5), st.integers(0, 5))
def test_stream_faults_keep_frame_boundaries(cuts: list[int], corrupt: int, drop: int) -> None:
    data = b"".join(wire(20))
    faults = LinkFaults(6)
    faults.corrupt_next, faults.drop_next = corrupt, drop
    out = b""
    pos = 0
    for cut in cuts:
        out += faults.apply_stream(data[pos : pos + cut])
        pos += cut
    out += faults.apply_stream(data[pos:])
    acks, _errors = decoded(out)
    touched = min(20, corrupt + drop)
    assert acks == list(range(touched + 1, 21))
