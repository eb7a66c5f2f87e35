"""The base model's tokenizer alone, without its weights: from fslm's weights cache when it holds the model,
else from the model's own folder or GGUF file."""

from __future__ import annotations

from pathlib import Path

from fslm_core import ModelSpec
from fslm_core.errors import ModelLoadError
from fslm_core.runtime import weights_cache


def load_tokenizer(spec: ModelSpec):
    from transformers import AutoTokenizer

    source = spec.source or (spec.id[3:] if spec.id.startswith("hf:") else "")
    options = {}
    if spec.gguf_file and source and Path(source, spec.gguf_file).is_file():
        entry, _ = weights_cache.find_entry(spec.id, Path(source, spec.gguf_file), spec.dtype)
        if weights_cache.cache_enabled() and weights_cache.usable_entry(entry):
            source = str(entry)
        else:
            options = {"gguf_file": spec.gguf_file}
    if not source:
        raise ModelLoadError(f"model {spec.id!r}: no local copy to read its tokenizer from ({spec.install_hint})")
    try:
        return AutoTokenizer.from_pretrained(source, **options)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"model {spec.id!r}: cannot read its tokenizer from {source!r} ({error})") from None
