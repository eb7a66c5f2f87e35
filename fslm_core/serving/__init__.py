"""``fslm serve``: stacks behind an OpenAI-compatible HTTP API, concurrent requests batched stage by stage."""

from .app import build_app
from .batcher import Batcher, Job
from .server import serve

__all__ = ["Batcher", "Job", "build_app", "serve"]
