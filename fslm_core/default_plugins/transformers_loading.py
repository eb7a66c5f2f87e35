"""Loading a transformers model for the backend: weights from a folder, a hub id or the GGUF weights cache,
on the device, tuned for the CPU (or quantised to int8), with errors that say where weights were looked for."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from ..api.backends import ModelSpec
from ..errors import ModelLoadError
from ..logs import get_logger
from ..runtime import weights_cache
from ..runtime.cpu_tuning import contiguous_head_input, tune_for_cpu
from ..runtime.devices import default_device
from ..runtime.int8_linear import CALIBRATION_TEXT, int8_available, quantize_linear_layers
from ..runtime.pool import local_folder_hint

log = get_logger(__name__)


def load_model(spec: ModelSpec):
    """``spec``'s model and tokenizer loaded on the device, tuned for the CPU or quantised, and that device."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if spec.quantize == "int8" and spec.dtype != "float32":
        raise ModelLoadError(f"model {spec.id!r}: quantize=int8 layers take float32 inputs, not {spec.dtype}")
    source, options, cache, gguf_sha256 = weights_location(spec)
    device = default_device()
    if spec.quantize == "int8" and (device.type != "cpu" or not int8_available()):
        where = "on the CPU only" if device.type != "cpu" else "only with PyTorch's fbgemm kernels (x86)"
        raise ModelLoadError(
            f"model {spec.id!r}: int8 layers (dtype int8, quantize=int8) run {where}; "
            "use dtype float32, bfloat16 or auto here"
        )
    load_dtype = getattr(torch, spec.dtype)
    if spec.quantize == "int8" and not spec.gguf_file:
        # In the checkpoint's own dtype: its layers become float32 one at a time as they are quantised,
        # so a bfloat16 checkpoint never exists in float32 as a whole (twice its size).
        load_dtype = "auto"
    started = time.perf_counter()
    try:
        with _loading_bars(shown=logging.getLogger(__name__).isEnabledFor(logging.INFO)):
            tokenizer = AutoTokenizer.from_pretrained(source, **options)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=load_dtype, **options)
        if cache is not None and options:
            try:
                weights_cache.write_entry(cache, model, tokenizer, Path(source, spec.gguf_file), gguf_sha256)
                log.info("weights cached", model=spec.id, entry=str(cache))
            except OSError as error:  # a read-only or full disk costs the next start time, nothing else
                log.warning("could not write the weights cache", model=spec.id, entry=str(cache), error=str(error))
    except (OSError, ValueError, ImportError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(
            f"model {spec.id!r}: cannot load weights from {source!r} ({reason}). "
            "Without network, point the stage's `model_path` (CLI: --model-path) at a local folder "
            "holding the model's config, tokenizer and weights"
            + ("" if ":" in spec.id else f", or put that folder at {local_folder_hint(spec.id)}")
        ) from None
    model.to(device).eval()
    if spec.quantize == "int8":
        # No keep_freed_memory here: the freed float32 weights are to be handed back, not kept.
        calibration_ids = tokenizer(CALIBRATION_TEXT, return_tensors="pt").input_ids
        tuning = {"int8_linear_layers": quantize_linear_layers(model, calibration_ids)}
        contiguous_head_input(model)
    else:
        tuning = tune_for_cpu(model) if device.type == "cpu" else {}
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    log.info(
        "loaded base model",
        model=spec.id,
        source=source,
        dtype=spec.dtype,
        parameters=sum(p.numel() for p in model.parameters()),
        **tuning,
        seconds=round(time.perf_counter() - started, 2),
    )
    return model, tokenizer, device


def weights_location(spec: ModelSpec) -> tuple[str, dict, Path | None, str | None]:
    """Where ``spec``'s weights and tokenizer are read from: the source and ``from_pretrained`` options
    (fslm's weights cache in place of a GGUF file it holds), and the cache entry to write after a load from
    the GGUF file with that file's hash (None, None when there is none to write)."""
    source = spec.source or ""
    if _looks_like_path(source):
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise ModelLoadError(f"model {spec.id!r}: folder does not exist: {folder}")
        source = str(folder.resolve())
    options = {"gguf_file": spec.gguf_file} if spec.gguf_file else {}
    cache = gguf_sha256 = None
    if spec.gguf_file and weights_cache.cache_enabled() and Path(source, spec.gguf_file).is_file():
        cache, gguf_sha256 = weights_cache.find_entry(spec.id, Path(source, spec.gguf_file), spec.dtype)
        if weights_cache.usable_entry(cache):
            source, options = str(cache), {}
    return source, options, cache, gguf_sha256


def load_tokenizer(spec: ModelSpec):
    """``spec``'s tokenizer alone, without its weights (a remote stage's prompts are laid out and counted
    locally)."""
    from transformers import AutoTokenizer

    source, options, _, _ = weights_location(spec)
    if not source:
        raise ModelLoadError(f"model {spec.id!r}: no local copy to read its tokenizer from ({spec.install_hint})")
    try:
        return AutoTokenizer.from_pretrained(source, **options)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"model {spec.id!r}: cannot read its tokenizer from {source!r} ({error})") from None


def _looks_like_path(source: str) -> bool:
    return source.startswith(("/", ".", "~")) or Path(source).expanduser().exists()


@contextmanager
def _loading_bars(shown: bool) -> Iterator[None]:
    """transformers' progress bars while a model loads ("Loading weights", GGUF de-quantisation), only if ``shown``.

    fslm shows its own progress; the loading bars appear with the ``-v`` of its
    command line (fslm's log level INFO). The GGUF converter calls tqdm itself,
    past transformers' switch for bars, so its ``tqdm`` is swapped for the call.
    """
    if shown:
        yield
        return
    from transformers.utils import logging as transformers_logging

    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_loading
    except ImportError:  # transformers without GGUF support
        gguf_loading = None
    gguf_tqdm = getattr(gguf_loading, "tqdm", None)
    bars_were_on = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    if gguf_tqdm is not None:
        gguf_loading.tqdm = functools.partial(gguf_tqdm, disable=True)
    try:
        yield
    finally:
        if gguf_tqdm is not None:
            gguf_loading.tqdm = gguf_tqdm
        if bars_were_on:
            transformers_logging.enable_progress_bar()
