"""Remote model ids: which server, which protocol, which adapter, and whose tokenizer.

A remote stage names everything in its model id, so a stack file says where each stage runs::

    remote:llama.cpp?url=http://127.0.0.1:8080&base=smollm2-135m-instruct&adapter=interpret
    remote:openai?url=http://gpu-box:8000&base=smollm2-135m-instruct&adapter=interpret
    remote:lorax?url=http://gpu-box:8080&base=smollm2-135m-instruct&adapter=me/interpret

``base`` is a model id fslm knows (a registered one or ``hf:<folder>``): its
tokenizer and chat template stay local, so a remote stage's prompt, its token
counts and its trace are the same as a local stage's. ``adapter`` is spelt as
the server spells it: a llama.cpp LoRA id (its position in ``--lora``) or
name (the GGUF file's stem), the model name a vLLM server serves the adapter
under, a LoRAX ``adapter_id``. Without it, the plain base answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from fslm_core.errors import DeclarationError

PREFIX = "remote:"
PROTOCOLS = ("llama.cpp", "openai", "lorax")
DEFAULT_CONCURRENCY = 64
DEFAULT_TIMEOUT_S = 600.0
_KEYS = ("url", "base", "adapter", "model", "concurrency", "timeout")


@dataclass(frozen=True)
class RemoteTarget:
    """Where and how a remote stage runs."""

    protocol: str
    url: str
    base: str
    adapter: str | None = None
    #: The model name an OpenAI-compatible server answers under when no adapter is named (default: base).
    model: str | None = None
    #: Requests in flight at once; the server batches what arrives together.
    concurrency: int = DEFAULT_CONCURRENCY
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def label(self) -> str:
        """The server, protocol and adapter, as errors and logs name them."""
        adapter = f", adapter {self.adapter!r}" if self.adapter else ", no adapter"
        return f"{self.protocol} server {self.url}{adapter}"


def is_remote(model_id: str) -> bool:
    return model_id.startswith(PREFIX)


def parse_target(model_id: str) -> RemoteTarget:
    """The target a ``remote:`` model id names; a malformed id is an error naming what is wrong."""
    if not is_remote(model_id):
        raise DeclarationError(f"model {model_id!r}: not a remote model id (they start with {PREFIX!r})")
    protocol, _, query = model_id[len(PREFIX) :].partition("?")
    where = f"model {model_id!r}"
    if protocol not in PROTOCOLS:
        raise DeclarationError(f"{where}: protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    fields = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(fields) - set(_KEYS))
    if unknown:
        raise DeclarationError(f"{where}: unknown field(s) {unknown}; a remote id takes {', '.join(_KEYS)}")
    for key in ("url", "base"):
        if not fields.get(key):
            raise DeclarationError(
                f"{where}: give {key}= (e.g. {PREFIX}{protocol}?url=http://127.0.0.1:8080&base=smollm2-135m-instruct)"
            )
    url = fields["url"].rstrip("/")
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
        raise DeclarationError(f"{where}: url {url!r} is not an http(s) address")
    try:
        concurrency = int(fields.get("concurrency", DEFAULT_CONCURRENCY))
        timeout = float(fields.get("timeout", DEFAULT_TIMEOUT_S))
    except ValueError:
        raise DeclarationError(f"{where}: concurrency must be a whole number and timeout a number of seconds") from None
    if concurrency < 1 or timeout <= 0:
        raise DeclarationError(f"{where}: concurrency and timeout must be above 0")
    return RemoteTarget(
        protocol, url, fields["base"], fields.get("adapter") or None, fields.get("model") or None, concurrency, timeout
    )


def target_id(target: RemoteTarget) -> str:
    """The model id naming ``target`` (the inverse of :func:`parse_target`)."""
    from urllib.parse import urlencode

    fields = {"url": target.url, "base": target.base}
    if target.adapter:
        fields["adapter"] = target.adapter
    if target.model:
        fields["model"] = target.model
    if target.concurrency != DEFAULT_CONCURRENCY:
        fields["concurrency"] = str(target.concurrency)
    if target.timeout_s != DEFAULT_TIMEOUT_S:
        fields["timeout"] = f"{target.timeout_s:g}"
    return f"{PREFIX}{target.protocol}?{urlencode(fields, safe=':/')}"
