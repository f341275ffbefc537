"""The gateway-facing end of a simulated meter's line (:class:`sim.pty_port.PtyPort`), driven directly.

The gateway's side is a plain file descriptor on the slave. Bytes cross a pty through the kernel's buffers, so a
test that needs them on the other side waits for the fd to poll ready, with a deadline.
"""

from __future__ import annotations

import os
import select
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sim.pty_port import PtyPort

DEVICE = "a1c55f0000000001"
TIMEOUT_MS = 5000


def ready(fd: int, flags: int) -> int:
    """The fd's poll flags once any of ``flags`` is set (POLLHUP always counts), or 0 after the deadline."""
    poller = select.poll()
    poller.register(fd, flags)
    events = poller.poll(TIMEOUT_MS)
    return events[0][1] if events else 0


@pytest.fixture
def port(tmp_path: Path) -> Iterator[PtyPort]:
    p = PtyPort(tmp_path, DEVICE)
    yield p
    p.close()


@pytest.fixture
def gateway() -> Iterator[Callable[[str], int]]:
    """Opens a slave as the gateway does (non-blocking here, so a test cannot hang on it)."""
    fds: list[int] = []

    def open_slave(path: str) -> int:
        fds.append(os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK))
        return fds[-1]

    yield open_slave
    for fd in fds:
        os.close(fd)


def test_open_points_the_stable_link_at_a_new_pty_and_leaves_no_temporary_link(port: PtyPort, tmp_path: Path) -> None:
    assert not port.plugged and port.check_peer() == 0
    port.open()
    assert port.plugged and port.link_path == tmp_path / f"ttyAICSS-{DEVICE}"
    assert os.readlink(port.link_path) == port.path and port.path.startswith("/dev/pts/")
    assert [p.name for p in tmp_path.iterdir()] == [port.link_path.name]


def test_nobody_holds_the_port_until_the_gateway_opens_it_then_its_writes_show(
    port: PtyPort, gateway: Callable[[str], int]
) -> None:
    port.open()
    assert port.check_peer() & select.POLLHUP and not port.connected
    slave = gateway(port.path)
    assert port.check_peer() == 0 and port.connected
    os.write(slave, b"\x00")
    assert port.master is not None and ready(port.master, select.POLLIN) & select.POLLIN
    assert port.check_peer() & select.POLLIN and port.connected


def test_flush_hands_the_bytes_to_the_gateway_unchanged(port: PtyPort, gateway: Callable[[str], int]) -> None:
    port.open()
    slave = gateway(port.path)
    port.check_peer()
    port.txbuf += b"\x01\n\r\x03\x00"  # raw: no line discipline turns these into anything else
    assert port.flush() == 5 and not port.txbuf
    assert ready(slave, select.POLLIN) & select.POLLIN
    assert os.read(slave, 16) == b"\x01\n\r\x03\x00"


def test_flush_keeps_what_the_pty_cannot_take_now(port: PtyPort, gateway: Callable[[str], int]) -> None:
    port.open()
    gateway(port.path)  # opened, never read: the kernel buffer fills
    port.check_peer()
    port.txbuf += bytes(1 << 20)
    written = port.flush()
    assert 0 < written < 1 << 20 and len(port.txbuf) == (1 << 20) - written


def test_a_gateway_that_closes_the_port_loses_what_waited_for_it(port: PtyPort) -> None:
    port.open()
    slave = os.open(port.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    port.check_peer()
    port.txbuf += b"\x01\x00"
    os.close(slave)
    assert port.check_peer() & select.POLLHUP
    assert not port.connected and not port.txbuf


def test_unplug_hangs_up_removes_the_link_and_replug_points_it_at_a_new_pty(
    port: PtyPort, gateway: Callable[[str], int]
) -> None:
    port.open()
    first = port.path
    slave = gateway(first)
    port.check_peer()
    port.txbuf += b"\x01\x00"
    port.close()
    assert not port.plugged and not port.connected and not port.txbuf
    assert not port.link_path.is_symlink() and ready(slave, select.POLLIN) & select.POLLHUP
    port.open()  # the old slave is still open, so the new pty cannot be the same one
    assert port.plugged and port.path != first and os.readlink(port.link_path) == port.path


def test_closing_an_old_port_leaves_a_newer_one_s_link_alone(tmp_path: Path) -> None:
    old, new = PtyPort(tmp_path, DEVICE), PtyPort(tmp_path, DEVICE)
    old.open()
    new.open()
    try:
        old.close()
        assert os.readlink(new.link_path) == new.path
    finally:
        new.close()
    assert not new.link_path.is_symlink()
