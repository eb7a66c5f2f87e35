"""JSON over HTTP with the standard library: timeouts, and retries with backoff where retrying can help."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from fslm_core.errors import FslmError

RETRIED_STATUS = frozenset({429, 500, 502, 503, 504})
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # a proxy set for the web is not for this


class RemoteServerError(FslmError):
    """A server did not answer, or answered with an error: the message names the server and the request."""


def request_json(
    method: str,
    url: str,
    body: Any = None,
    *,
    timeout_s: float,
    retries: int = 4,
    backoff_s: float = 0.5,
    label: str = "",
) -> Any:
    """``body`` sent as JSON; the JSON answer. Connection errors, timeouts, 429 and 5xx are retried ``retries``
    times, waiting ``backoff_s`` and then twice as long each time; other errors at once."""
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    where = f"{label}: {method} {url}" if label else f"{method} {url}"
    for attempt in range(retries + 1):
        last = attempt == retries
        try:
            with _OPENER.open(request, timeout=timeout_s) as response:
                return json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", "replace")[:300].strip()
            if error.code in RETRIED_STATUS and not last:
                time.sleep(backoff_s * 2**attempt)
                continue
            raise RemoteServerError(f"{where} answered {error.code}: {detail or error.reason}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            if not last:
                time.sleep(backoff_s * 2**attempt)
                continue
            reason = getattr(error, "reason", error)
            raise RemoteServerError(
                f"{where}: no answer after {retries + 1} attempts ({reason}); is the server running?"
            ) from None
        except json.JSONDecodeError:
            raise RemoteServerError(f"{where}: the answer is not JSON") from None
    raise AssertionError("unreachable")
