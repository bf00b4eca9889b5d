"""A TCP forwarder that can be cut: a database outage for one process, without touching the server.

Cut, it closes every connection it carries and refuses new ones (accepts and closes at once), as
a dead database host looks to a client; restored, it forwards again. Only what goes through it
is affected: the test reads the database directly. `cut_after_commit` cuts at the worst moment:
the server has the COMMIT, the client never hears that it committed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class TcpCut:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._cut = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._trap: bytes | None = None
        self._trap_commit = True
        self._armed: set[socket.socket] = set()  # clients that sent the trap's statement
        self._muted: set[socket.socket] = set()  # clients whose replies are dropped
        self.sprung = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut_after_commit(self, statement: bytes) -> None:
        """The first COMMIT a client sends after a statement containing `statement` reaches the
        server; its reply never comes back, and the connections are cut once the server has had
        time to commit (then `sprung` is set). New connections are refused until `restore`."""
        self._trap, self._trap_commit = statement, True

    def cut_on(self, statement: bytes) -> None:
        """The first statement containing `statement` never reaches the server: every connection
        is cut as it is sent (then `sprung` is set), and new ones refused until `restore`."""
        self._trap, self._trap_commit = statement, False

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            for sock in list(self._sockets):
                _close(sock)
            self._sockets.clear()

    def restore(self) -> None:
        self._armed.clear()
        self._muted.clear()
        self._cut.clear()

    def close(self) -> None:
        self._closed.set()
        self.cut()
        _close(self._listener)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut.is_set():
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if sink in self._muted:
                    continue  # the reply the client must never hear
                if self._trap is not None and self._trap in data:
                    if not self._trap_commit:
                        self._trap = None
                        self.cut()
                        self.sprung.set()
                        return
                    self._armed.add(source)
                elif source in self._armed and b"COMMIT" in data:
                    self._trap = None
                    self._muted.add(source)
                    sink.sendall(data)
                    time.sleep(0.3)  # the server commits; its answer is dropped
                    self.cut()
                    self.sprung.set()
                    return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _close(source)
            _close(sink)
            with self._lock:
                self._sockets.discard(source)
                self._sockets.discard(sink)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
