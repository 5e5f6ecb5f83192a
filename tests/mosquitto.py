"""Test helper: a real Mosquitto broker on a free 127.0.0.1 port, which a test can stop and restart.

>>> with Mosquitto(tmp_dir) as broker:      # doctest: +SKIP
...     broker.stop(); broker.start()       # same port both times
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

MOSQUITTO = Path("/usr/sbin/mosquitto")


def require_mosquitto() -> Path:
    """The broker binary, or skip the test with the reason."""
    exe = MOSQUITTO if MOSQUITTO.exists() else shutil.which("mosquitto")
    if not exe:
        pytest.skip("mosquitto broker not installed (Debian package `mosquitto`, /usr/sbin/mosquitto)")
    return Path(exe)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    """One broker process listening on ``127.0.0.1:port``, anonymous access.

    Persistence is on (in ``workdir``) so a subscriber's session and its queued QoS 1 messages survive
    a restart, as they would on a fleet's real broker.

    ``tls`` = ``(ca, cert, key)`` paths makes the listener TLS-only.
    """

    def __init__(self, workdir: Path, port: int | None = None, tls: tuple[Path, Path, Path] | None = None):
        self.exe = require_mosquitto()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.conf = self.workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.workdir}/",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
        ]
        if os.geteuid() == 0:
            # Otherwise mosquitto switches to its own user, which cannot reach pytest's 0700 temp dirs.
            lines.append("user root")
        if tls is not None:
            ca, cert, key = tls
            lines += [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.workdir / "mosquitto.log"

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the broker and wait until its port accepts connections."""
        assert self.proc is None, "broker already running"
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen([str(self.exe), "-c", str(self.conf)], stdout=logf, stderr=logf)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {self.log.read_text()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on 127.0.0.1:{self.port} within {timeout_s}s")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL) and wait until the port is closed."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout_s)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class HostileBroker:
    """A TCP server on 127.0.0.1 that answers every connection with ``reply`` and then closes it."""

    def __init__(self, reply: bytes, hold_s: float = 0.0):
        self.reply, self.hold_s = reply, hold_s
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            with conn:
                try:
                    conn.recv(4096)
                    conn.sendall(self.reply)
                    self._stop.wait(self.hold_s)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()
