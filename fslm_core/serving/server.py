"""Run the app with uvicorn: SIGINT and SIGTERM stop taking requests and finish those in flight (bounded wait)."""

from __future__ import annotations

import contextlib
import socket

import uvicorn

from ..declarations import Stack
from ..logs import get_logger
from ..runtime.stage_cache import StageCache
from .app import MAX_REQUEST_BYTES, build_app
from .batcher import Batcher
from .listen import bind_socket

log = get_logger(__name__)


class GracefulServer(uvicorn.Server):
    """A stop asked for with SIGTERM or SIGINT that ends with every request in flight answered exits with
    status 0; uvicorn would raise the signal again afterwards (status 143 or 130), as for a crash."""

    @contextlib.contextmanager
    def capture_signals(self):
        with super().capture_signals():
            yield
            if not self.force_exit:
                self._captured_signals.clear()


def serve(
    stacks: dict[str, Stack],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    sock: socket.socket | None = None,
    max_batch: int = 64,
    window_s: float = 0.05,
    seed: int = 0,
    cache: StageCache | None = None,
    graceful_timeout_s: float = 30.0,
    log_level: str = "warning",
    default_stack: str | None = None,
    max_request_bytes: int = MAX_REQUEST_BYTES,
) -> None:
    """Serve ``stacks`` (by the names clients give as ``model``) until SIGINT or SIGTERM.

    ``sock`` is a socket :func:`bind_socket` bound already; without it, this binds ``host:port`` first.
    ``default_stack`` names the served stack that is this installation's default (``/health`` says so, and
    ``fslm run`` without a stack option answers through it).
    """
    sock = sock or bind_socket(host, port)
    batcher = Batcher(stacks, max_batch=max_batch, window_s=window_s, seed=seed, cache=cache)
    app = build_app(
        batcher,
        stop_timeout_s=graceful_timeout_s,
        default_stack=default_stack,
        max_request_bytes=max_request_bytes,
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=int(graceful_timeout_s),
        access_log=log_level in ("info", "debug"),
    )
    log.info("serving", host=host, port=port, stacks=sorted(stacks))
    GracefulServer(config).run(sockets=[sock])
