"""A meter's serial port as the gateway sees it: a pseudo-terminal behind a stable link, and what waits to be written.

Both kinds of simulated meter put their UART behind one of these: :mod:`sim.port` (the meter model) and
:mod:`sim.firmware` (the real firmware in simavr). The gateway opens the pty's slave side like a USB serial port,
through ``<link_dir>/ttyAICSS-<device>`` (the simulator's ``/dev/serial/by-id/...``); the owner keeps only the
master. What makes it behave like a USB-serial adapter lives here, once:

- **Plug and unplug.** :meth:`PtyPort.close` closes the master, so the gateway's reads fail (EIO, "device
  disconnected"), and removes the link; :meth:`PtyPort.open` makes a new pty and points the link at it. The link is
  replaced by renaming a hidden one over it, so a gateway's glob never sees it dangle or half made.
- **A port nobody holds open.** The master reports POLLHUP while no one has the slave open. The owner then writes
  nothing: what the meter says meanwhile is lost on the wire, as with an adapter whose port is closed (the meter's
  queue and the gateway's SYNC recover it), instead of filling the kernel's buffer until the meter stalls.

Not thread-safe: the owner holds its lock around every call and every attribute.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import tty
from pathlib import Path

LINK_PREFIX = "ttyAICSS-"


class PtyPort:
    """The gateway-facing end of one meter's serial line; created unplugged (call :meth:`open`)."""

    def __init__(self, link_dir: Path, device: str) -> None:
        self.link_path = link_dir / f"{LINK_PREFIX}{device}"
        self.master: int | None = None
        """The master side while plugged."""
        self.path = ""
        """The slave device (/dev/pts/N) of the last pty opened; it changes on replug."""
        self.connected = False
        """Someone holds the slave open, as of the last :meth:`check_peer`."""
        self.txbuf = bytearray()
        """Bytes for the gateway that the pty has not taken yet."""

    @property
    def plugged(self) -> bool:
        return self.master is not None

    def open(self) -> None:
        """Plug in: a new pty, the link pointed at it. Nobody has it open yet."""
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line discipline: a byte pipe like a USB CDC port
        self.path = os.ttyname(slave)
        os.close(slave)
        os.set_blocking(master, False)
        self.master = master
        self.connected = False
        tmp = self.link_path.with_name(f".{self.link_path.name}.new")  # hidden: a gateway's glob never sees it
        tmp.unlink(missing_ok=True)
        os.symlink(self.path, tmp)
        os.replace(tmp, self.link_path)  # atomic: the link never dangles between two ptys

    def close(self) -> None:
        """Unplug: close the master and remove the link (unless it already points at a newer pty)."""
        if self.master is not None:
            os.close(self.master)
            self.master = None
        self.connected = False
        self.txbuf.clear()
        with contextlib.suppress(OSError):
            if os.readlink(self.link_path) == self.path:
                self.link_path.unlink()

    def check_peer(self) -> int:
        """Notice whether someone holds the slave open (POLLHUP on the master says nobody does); what waited for a
        reader that left is dropped. Returns the master's poll flags (0 while unplugged): POLLIN means the gateway
        wrote something."""
        if self.master is None:
            return 0
        poller = select.poll()
        poller.register(self.master, select.POLLIN)
        events = poller.poll(0)
        flags = events[0][1] if events else 0
        self.connected = not flags & (select.POLLHUP | select.POLLERR)
        if not self.connected:
            self.txbuf.clear()
        return flags

    def peer_gone(self) -> None:
        """The reader closed the port: what waits for it is lost on the wire."""
        self.connected = False
        self.txbuf.clear()

    def flush(self) -> int:
        """Write what waits, as much as the pty takes now; returns the bytes written. EIO (the reader closed the
        port) drops the rest, see :meth:`peer_gone`."""
        written = 0
        while self.txbuf and self.master is not None:
            try:
                n = os.write(self.master, self.txbuf)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                self.peer_gone()
                break
            written += n
            del self.txbuf[:n]
        return written
