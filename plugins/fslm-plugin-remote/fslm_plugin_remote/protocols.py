"""What each kind of server is sent and answers: llama.cpp's ``/completion``, OpenAI-compatible
``/v1/completions`` (vLLM, SGLang, llama-server itself), LoRAX's ``/generate``.

Each protocol checks before any request that the server is up and knows the
adapter (where the server can say), then turns one prompt into one request.
The prompt goes as the local tokenizer's ids where the server takes ids
(llama.cpp, OpenAI-compatible), so the server reads exactly the tokens a local
stage would; LoRAX takes text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

from fslm_core.declarations import GenerationSettings
from fslm_core.errors import ModelLoadError

from .http import RemoteServerError, request_json
from .targets import RemoteTarget

CHECK_TIMEOUT_S = 10.0


@dataclass
class Completion:
    text: str
    completion_tokens: int
    logprobs: list[float]


class Protocol:
    """One kind of server; :meth:`check` once, then :meth:`complete` per prompt (from many threads)."""

    def __init__(self, target: RemoteTarget):
        self.target = target

    def get(self, path: str, retries: int = 2):
        return request_json(
            "GET", self.target.url + path, timeout_s=CHECK_TIMEOUT_S, retries=retries, label=self.target.label
        )

    def post(self, path: str, body: dict):
        return request_json(
            "POST", self.target.url + path, body, timeout_s=self.target.timeout_s, label=self.target.label
        )

    def check(self) -> None:
        raise NotImplementedError

    def complete(self, token_ids: list[int], text: str, settings: GenerationSettings) -> Completion:
        raise NotImplementedError

    def refuse(self, reason: str) -> ModelLoadError:
        return ModelLoadError(f"{self.target.label}: {reason}")


class LlamaCpp(Protocol):
    """llama.cpp's ``llama-server``, started with its adapters loaded but not applied
    (``--lora a.gguf,b.gguf --lora-init-without-apply``); each request sets every adapter's scale, 1 for the
    stage's own and 0 for the rest (a request naming none would get every adapter at its loaded scale)."""

    adapter_ids: list[int]
    chosen: int | None = None

    def check(self) -> None:
        try:
            self.get("/health", retries=4)
            adapters = self.get("/lora-adapters")
        except RemoteServerError as error:
            raise self.refuse(f"the server is not ready ({error})") from None
        self.adapter_ids = [int(entry["id"]) for entry in adapters]
        wanted = self.target.adapter
        if wanted is None:
            return
        names = {PurePath(entry.get("path", "")).stem: int(entry["id"]) for entry in adapters}
        if wanted.isdigit() and int(wanted) in self.adapter_ids:
            self.chosen = int(wanted)
        elif wanted in names:
            self.chosen = names[wanted]
        else:
            known = ", ".join(f"{i} ({name})" for name, i in sorted(names.items(), key=lambda item: item[1]))
            raise self.refuse(
                f"adapter {wanted!r} is not loaded (loaded: {known or 'none'}; start the server "
                "with --lora a.gguf,b.gguf --lora-init-without-apply)"
            )

    def complete(self, token_ids, text, settings) -> Completion:
        body = {
            "prompt": token_ids,
            "n_predict": settings.max_new_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "repeat_penalty": settings.repetition_penalty,
            "stop": list(settings.stop),
            "lora": [{"id": i, "scale": 1.0 if i == self.chosen else 0.0} for i in self.adapter_ids],
            "n_probs": 1,
            "cache_prompt": True,
        }
        answer = self.post("/completion", body)
        logprobs = [float(p["logprob"]) for p in answer.get("completion_probabilities") or [] if "logprob" in p]
        return Completion(answer["content"], int(answer.get("tokens_predicted", len(logprobs))), logprobs)


class OpenAICompatible(Protocol):
    """An OpenAI-compatible ``/v1/completions`` server; vLLM serves each adapter as a model of its own
    (``--enable-lora --lora-modules name=path``), so the request's ``model`` is the adapter's name."""

    @property
    def model_name(self) -> str:
        return self.target.adapter or self.target.model or self.target.base

    def check(self) -> None:
        try:
            served = [entry["id"] for entry in self.get("/v1/models", retries=4).get("data", [])]
        except RemoteServerError as error:
            raise self.refuse(f"the server is not ready ({error})") from None
        if self.model_name not in served:
            raise self.refuse(f"model {self.model_name!r} is not served (served: {', '.join(served) or 'none'})")

    def complete(self, token_ids, text, settings) -> Completion:
        body = {
            "model": self.model_name,
            "prompt": token_ids,
            "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "stop": list(settings.stop) or None,
            "logprobs": 1,
        }
        if settings.repetition_penalty != 1.0:
            body["repetition_penalty"] = settings.repetition_penalty  # vLLM's extra sampling parameter
        answer = self.post("/v1/completions", body)
        choice = answer["choices"][0]
        logprobs = [float(v) for v in (choice.get("logprobs") or {}).get("token_logprobs") or [] if v is not None]
        usage = answer.get("usage") or {}
        return Completion(choice["text"], int(usage.get("completion_tokens", len(logprobs))), logprobs)


class LoRAX(Protocol):
    """LoRAX (and TGI with adapters): ``/generate`` with ``parameters.adapter_id``; adapters load on first use,
    so an unknown one shows at the first request, not before."""

    def check(self) -> None:
        try:
            self.get("/info", retries=4)
        except RemoteServerError as error:
            raise self.refuse(f"the server is not ready ({error})") from None

    def complete(self, token_ids, text, settings) -> Completion:
        sampling = not settings.greedy
        parameters = {
            "max_new_tokens": settings.max_new_tokens,
            "do_sample": sampling,
            "temperature": settings.temperature if sampling else None,
            "top_p": settings.top_p if sampling and settings.top_p < 1.0 else None,
            "repetition_penalty": settings.repetition_penalty if settings.repetition_penalty != 1.0 else None,
            "stop": list(settings.stop),
            "details": True,
        }
        if self.target.adapter:
            parameters["adapter_id"] = self.target.adapter
        answer = self.post("/generate", {"inputs": text, "parameters": parameters})
        details = answer.get("details") or {}
        logprobs = [float(t["logprob"]) for t in details.get("tokens") or [] if t.get("logprob") is not None]
        return Completion(answer["generated_text"], int(details.get("generated_tokens", len(logprobs))), logprobs)


PROTOCOL_CLASSES: dict[str, type[Protocol]] = {"llama.cpp": LlamaCpp, "openai": OpenAICompatible, "lorax": LoRAX}


def protocol_for(target: RemoteTarget) -> Protocol:
    return PROTOCOL_CLASSES[target.protocol](target)
