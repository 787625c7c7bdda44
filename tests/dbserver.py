"""Database servers a test can take away: a private PostgreSQL, and a TCP proxy that cuts.

``PrivatePostgres`` runs a throw-away cluster from the installed PostgreSQL binaries (found at
run time: ``pg_config --bindir``, else ``/usr/lib/postgresql/*/bin``), so a test can stop and
start a real server without touching the shared one. ``CuttingProxy`` forwards TCP connections
to a database and, on demand, cuts every open connection and refuses new ones (it accepts and
closes them at once, counting each: that count is the number of connection attempts).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def postgres_bindir() -> Path | None:
    """Return the directory holding initdb and pg_ctl, or None when PostgreSQL is not installed."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if found.returncode == 0:
            candidates.append(Path(found.stdout.strip()))
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    return None


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own, in a temporary directory, trusting local users."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        # Not under pytest's tmp_path: as root that is private to root, and the server runs as
        # the postgres user (who must reach its data directory and socket directory).
        root = Path(tempfile.mkdtemp(prefix="background-tasks-pg-"))
        self.root = root
        self.data = root / "data"
        self.log = root / "server.log"
        self.port = free_port()
        # initdb and postgres refuse to run as root: run them as the postgres user then.
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
            os.chown(root, user.pw_uid, user.pw_gid)

    @staticmethod
    def can_run() -> str | None:
        """Return why no private cluster can run here, or None when one can."""
        if postgres_bindir() is None:
            return "no PostgreSQL server binaries (initdb, pg_ctl) are installed"
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                return "running as root and there is no postgres user to run the server as"
            if shutil.which("runuser") is None:
                return "running as root without runuser to start the server as postgres"
        return None

    def _run(self, *args: str) -> None:
        done = subprocess.run(
            [*self._as, *args], capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    def init(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off"
        )
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
            "-o", options, "-w", "start",
        )  # fmt: skip

    def kill(self) -> None:
        """Stop the server the hard way: every backend dies, no checkpoint."""
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"
        )

    def stop(self) -> None:
        """Stop the server if it runs, and remove its files."""
        with contextlib.suppress(RuntimeError):
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str, port: int | None = None) -> str:
        return f"postgres://postgres@127.0.0.1:{port or self.port}/{database}"


class CuttingProxy:
    """Forward TCP connections to ``upstream``; ``cut()`` drops them all until ``resume()``."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._refusing = False
        self._closed = False
        #: Connections accepted (each one a connection attempt of a client), in total ...
        self.accepted = 0
        #: ... and not forwarded: while cut, or when the server did not answer.
        self.refused = 0
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            self._refusing = True
            sockets, self._open = self._open, []
        for sock in sockets:
            _close(sock)

    def resume(self) -> None:
        with self._lock:
            self._refusing = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        _close(self._listener)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                refusing = self._refusing
                if refusing:
                    self.refused += 1
            if refusing:
                _close(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                with self._lock:
                    self.refused += 1
                _close(client)  # the server itself is down: the client sees a refusal too
                continue
            server.settimeout(None)
            with self._lock:
                self._open += [client, server]
            for source, target in ((client, server), (server, client)):
                threading.Thread(
                    target=_pump, args=(source, target), name="proxy-pump", daemon=True
                ).start()


def cpu_seconds(pid: int) -> float:
    """Return the user + system CPU time a live process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        _close(source)
        _close(target)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
