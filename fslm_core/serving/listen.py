"""The server's listening socket, bound before anything is announced or loaded (no web framework imported)."""

from __future__ import annotations

import socket

from ..errors import InputError


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or one line saying why not: bound before anything is announced
    or loaded, so a port in use costs a second."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        reason = (error.strerror or str(error)).lower()
        hint = "choose another --port" if error.errno in (98, 48) else "check --host and --port"
        raise InputError(f"--port: cannot listen on {host}:{port} ({reason}); {hint}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
