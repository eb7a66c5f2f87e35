"""``fslm export STACK --to llama.cpp DIR``: a stack's adapters as GGUF LoRAs, the ``llama-server`` command
that serves them on the stack's base model, and a stack file that runs the same stack against that server.

llama-server holds one base model: every model stage of the stack must name the
same model id. Each stage's PEFT adapter is converted with the converter of the
llama.cpp source the server is built from (``convert_lora_to_gguf.py``, which
reads only the base model's config); the base's own GGUF file is used where
its plugin names one (the embedded SmolLM2 does).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from fslm_core import Stack
from fslm_core.api.exporters import Exporter, ExportResult
from fslm_core.errors import InputError, ModelLoadError
from fslm_core.files import atomic_write_text
from fslm_core.plugins import get_registry

from .targets import RemoteTarget, target_id

LLAMA_CPP_ENV = "FSLM_LLAMA_CPP_DIR"
BUILD_CACHE_ENV = "FSLM_BUILD_CACHE"
ADAPTER_SOURCES = "adapter_sources.json"
"""Beside serve.sh: the sha256 of the adapter each adapters/<stage>.gguf was converted from."""
CONVERT_TIMEOUT_S = 1800
"""Converting one LoRA adapter takes seconds; a converter still running after this has stalled."""
DEFAULT_OPTIONS = {"host": "127.0.0.1", "port": "8080", "slots": "64", "slot_tokens": "1024", "threads": ""}


def llama_cpp_source(given: str | None = None) -> Path:
    """The llama.cpp source tree (for its converter): given, ``$FSLM_LLAMA_CPP_DIR``, or the server build's."""
    candidates = [given, os.environ.get(LLAMA_CPP_ENV)]
    cache = Path(os.environ.get(BUILD_CACHE_ENV) or Path.home() / ".cache" / "fslm-build")
    candidates += [str(path) for path in sorted(cache.glob("llama_cpp_python-*/vendor/llama.cpp"), reverse=True)]
    for candidate in candidates:
        if candidate and (Path(candidate) / "convert_lora_to_gguf.py").is_file():
            return Path(candidate)
    raise InputError(
        f"no llama.cpp source with convert_lora_to_gguf.py: set {LLAMA_CPP_ENV} or --option llama_cpp=DIR, "
        "or build llama-server with scripts/build-llama-server.sh (it keeps the source)"
    )


def base_config_folder(model_id: str, into: Path) -> Path:
    """A folder with the base model's config and tokenizer, as the converter reads them: from fslm's weights
    cache (which holds a GGUF model de-quantised), with ``architectures`` filled in where it is empty."""
    from fslm_core.default_plugins.transformers_loading import weights_location  # imports torch: only on export

    source, options, _, _ = weights_location(get_registry().model(model_id))
    if options.get("gguf_file"):
        raise ModelLoadError(f"model {model_id!r}: run it once (fslm run) so fslm's weights cache holds its config")
    source = Path(source)
    if not (source / "config.json").is_file():
        raise ModelLoadError(f"model {model_id!r}: no config.json in {source}")
    into.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.name != "config.json" and "token" in item.name:
            (into / item.name).symlink_to(item)
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    if not config.get("architectures"):
        # Written from a GGUF file, the config names no class; the converter finds the model by it.
        config["architectures"] = [
            {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}.get(
                config.get("model_type", ""), "LlamaForCausalLM"
            )
        ]
    (into / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return into


def base_gguf(model_id: str, given: str | None) -> Path:
    if given:
        path = Path(given).expanduser().resolve()
        if not path.is_file():
            raise InputError(f"--option base_gguf: no file at {path}")
        return path
    spec = get_registry().model(model_id)
    if spec.gguf_file and spec.source and (Path(spec.source) / spec.gguf_file).is_file():
        return Path(spec.source, spec.gguf_file).resolve()
    raise InputError(
        f"model {model_id!r} has no GGUF file fslm knows of: convert it with llama.cpp's convert_hf_to_gguf.py "
        "and pass --option base_gguf=PATH"
    )


class LlamaCppExporter(Exporter):
    name = "llama.cpp"
    description = "GGUF LoRA adapters, the llama-server command serving them, and a stack file that runs there"
    options = {
        "host": "address the server listens on (127.0.0.1)",
        "port": "its port (8080)",
        "slots": "requests it runs at once, -np (64)",
        "slot_tokens": "context tokens per slot (1024); -c is slots times this",
        "threads": "CPU threads, -t (all cores)",
        "base_gguf": "the base model's GGUF file, where fslm knows none",
        "llama_cpp": "llama.cpp source folder with convert_lora_to_gguf.py",
        "server": "the llama-server binary the command names (llama-server)",
    }

    def export(self, stack: Stack, folder: Path, options: dict[str, str]) -> ExportResult:
        settings = {**DEFAULT_OPTIONS, **options}
        stages = [stage for stage in stack.stages if stage.model is not None]
        models = sorted({stage.model for stage in stages})
        if len(models) != 1:
            raise InputError(f"stack {stack.name!r}: llama-server holds one base model; the stages name {models}")
        (model_id,) = models
        slots, slot_tokens = (_whole_number(settings, name) for name in ("slots", "slot_tokens"))
        base_file = base_gguf(model_id, settings.get("base_gguf"))  # before any conversion: a missing one ends it
        folder = folder.resolve()
        adapters_dir = folder / "adapters"
        adapters_dir.mkdir(parents=True, exist_ok=True)
        sources = folder / ADAPTER_SOURCES
        converted_from = json.loads(sources.read_text(encoding="utf-8")) if sources.is_file() else {}
        converter = llama_cpp_source(settings.get("llama_cpp")) / "convert_lora_to_gguf.py"
        adapted = [stage for stage in stages if stage.adapter is not None]
        files: list[Path] = []
        with tempfile.TemporaryDirectory() as scratch:
            base_folder = base_config_folder(model_id, Path(scratch) / "base") if adapted else None
            for stage in adapted:
                target = adapters_dir / f"{stage.name}.gguf"
                # An adapter retrained since the last export is converted again, not served stale.
                weights = Path(stage.adapter) / "adapter_model.safetensors"
                if not weights.is_file():
                    raise InputError(f"stage {stage.name!r}: adapter {stage.adapter} has no {weights.name}")
                # The config too: its lora_alpha sets the converted adapter's scale.
                config = weights.with_name("adapter_config.json")
                fingerprint = hashlib.sha256(weights.read_bytes() + config.read_bytes()).hexdigest()
                if not target.is_file() or converted_from.get(stage.name) != fingerprint:
                    partial = target.with_suffix(".gguf.partial")
                    command = [
                        sys.executable,
                        str(converter),
                        "--base",
                        str(base_folder),
                        "--outtype",
                        "f16",
                        "--outfile",
                        str(partial),
                        str(stage.adapter),
                    ]
                    try:
                        done = subprocess.run(command, capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S)
                    except subprocess.TimeoutExpired:
                        partial.unlink(missing_ok=True)
                        raise ModelLoadError(
                            f"stage {stage.name!r}: converting {stage.adapter} took more than {CONVERT_TIMEOUT_S} s"
                        ) from None
                    if done.returncode != 0:
                        partial.unlink(missing_ok=True)
                        tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
                        raise ModelLoadError(f"stage {stage.name!r}: converting {stage.adapter} failed: {tail}")
                    partial.replace(target)
                    converted_from[stage.name] = fingerprint
                    atomic_write_text(sources, json.dumps(converted_from, indent=1, sort_keys=True))
                files.append(target)
        url = f"http://{settings['host']}:{settings['port']}"
        server = [
            settings.get("server") or "llama-server",
            "-m",
            str(base_file),
            *(["--lora", ",".join(str(path) for path in files), "--lora-init-without-apply"] if files else []),
            "-np",
            str(slots),
            "-c",
            str(slots * slot_tokens),
            "-t",
            settings["threads"] or str(os.cpu_count() or 1),
            "--host",
            settings["host"],
            "--port",
            str(settings["port"]),
        ]
        command = shlex.join(server)
        script = folder / "serve.sh"
        atomic_write_text(
            script, f"#!/bin/sh\n# Serves stack {stack.name!r} for {folder / 'stack.yaml'}\nexec {command}\n"
        )
        script.chmod(0o755)
        remote = []
        for stage in stack.stages:
            if stage.model is None:
                remote.append(stage)
                continue
            target = RemoteTarget("llama.cpp", url, model_id, stage.name if stage.adapter is not None else None)
            remote.append(stage.model_copy(update={"model": target_id(target), "adapter": None}))
        exported = stack.model_copy(update={"stages": tuple(remote), "name": f"{stack.name}@llama.cpp"})
        stack_file = exported.save(folder / "stack.yaml")
        return ExportResult(files=[*files, script, stack_file], command=command, stack_file=stack_file)


def _whole_number(settings: dict[str, str], name: str) -> int:
    try:
        value = int(settings[name])
    except (TypeError, ValueError):
        value = 0
    if value <= 0:
        raise InputError(f"--option {name}: expected a whole number above 0, got {settings[name]!r}")
    return value
