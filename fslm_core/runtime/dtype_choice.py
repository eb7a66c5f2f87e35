"""What ``dtype: auto`` means on this machine, decided by timing a decoding step in each dtype.

CPU flags alone mislead: a CPU with ``avx512_bf16`` multiplies bf16 matrices
at several times float32's rate, yet a stack's decoding step there measured
twice as slow in bf16 as in float32 (small row counts, LoRA adapters in
float32 around bf16 layers, casts). So ``auto`` times what the engine really
does, once per machine and torch version: a few decoding steps of a model
with the embedded SmolLM2-135M's layer shapes (random weights, four layers and
its vocabulary-sized head), 32 rows after a 32-token prompt, one LoRA adapter on every linear layer,
each dtype with the CPU tuning the engine gives it. The result is cached in
fslm's cache folder and shown by ``fslm plugins`` and ``fslm run -v``.

``auto`` chooses between the dtypes whose accuracy the project measured as
float32's within noise and that do not quantise: float32, and bfloat16 where
the CPU computes it natively and its step is at least :data:`BF16_MARGIN`
times faster (bf16 changes greedy text at near-ties, so it must pay for
that). int8 is timed and shown but never chosen: it is a quantisation, with
a measured KL from float32 26 times bf16's, and a user asks for it by name.

``FSLM_AUTO_DTYPE=float32|bfloat16|int8`` overrides the decision (a test run
of the bf16 path on any CPU, say); ``FSLM_AUTO_DTYPE=probe`` times afresh.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import InputError
from ..files import atomic_write_text, cache_dir
from ..logs import get_logger
from .devices import cpu_summary, has_native_bf16

AUTO_DTYPE_ENV = "FSLM_AUTO_DTYPE"
PROBE_VERSION = 1
BF16_MARGIN = 1.1
"""bf16 must decode this many times faster than float32 for ``auto`` to take it."""
CHOOSABLE = ("float32", "bfloat16")
FORCEABLE = ("float32", "bfloat16", "int8")

# SmolLM2-135M-Instruct's shapes: a step's cost per layer and its head are what the probe compares.
PROBE_SHAPES = {
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "num_hidden_layers": 4,
    "vocab_size": 49152,
    "max_position_embeddings": 2048,
}
PROBE_ROWS, PROBE_PROMPT_TOKENS, PROBE_STEPS, PROBE_REPEATS = 32, 32, 8, 5

log = get_logger(__name__)


@dataclass(frozen=True)
class DtypeProbe:
    """One machine's decoding-step times per dtype (milliseconds), and the dtype ``auto`` takes from them."""

    step_ms: dict[str, float]
    choice: str
    cpu: str
    flags: list[str]
    torch: str
    threads: int
    measured: str
    version: int = PROBE_VERSION
    forced: bool = field(default=False, compare=False)

    def summary(self) -> str:
        """One line: the choice, then each dtype's step time."""
        times = ", ".join(f"{dtype} {ms:.1f} ms" for dtype, ms in self.step_ms.items())
        how = f"forced by {AUTO_DTYPE_ENV}" if self.forced else "fastest of float32/bfloat16 by a decoding-step probe"
        return f"auto dtype: {self.choice} ({how}; per step: {times or 'not timed'})"


def choose_auto_dtype(step_ms: dict[str, float], flags) -> str:
    """The dtype ``auto`` takes from measured step times: float32 unless native bf16 is faster by the margin."""
    float32 = step_ms.get("float32")
    bf16 = step_ms.get("bfloat16")
    if float32 is None or bf16 is None or not has_native_bf16(flags):
        return "float32"
    return "bfloat16" if bf16 * BF16_MARGIN <= float32 else "float32"


def auto_dtype(device_type: str | None = None) -> str:
    """What ``dtype: auto`` computes in here: the probe's choice on a CPU; float32 on a GPU (fslm does not choose)."""
    from .devices import default_device

    if (device_type or default_device().type) != "cpu":
        return "float32"
    return dtype_probe().choice


def machine_key() -> dict:
    import torch

    machine = cpu_summary()
    return {"cpu": machine["cpu"], "flags": machine["flags"], "torch": torch.__version__, "version": PROBE_VERSION}


def probe_file(key: dict) -> Path:
    import hashlib

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / "dtype-probe" / f"{digest}.json"


def forced_dtype() -> str | None:
    """The dtype ``FSLM_AUTO_DTYPE`` forces, None when unset (or ``probe``); a value it cannot be is an error."""
    value = os.environ.get(AUTO_DTYPE_ENV, "").strip().lower()
    if not value or value == "probe":
        return None
    if value not in FORCEABLE:
        raise InputError(f"{AUTO_DTYPE_ENV}: expected one of {', '.join(FORCEABLE)} or probe, got {value!r}")
    return value


def stored_probe() -> DtypeProbe | None:
    """The probe this machine and torch version measured before, if its file is there and readable."""
    key = machine_key()
    path = probe_file(key)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if {name: data.get(name) for name in key} == key:
            return DtypeProbe(**data)
    except (OSError, ValueError, TypeError):
        pass  # missing, unreadable or from another layout: measured again when needed
    return None


@functools.cache
def _cached_probe() -> DtypeProbe:
    fresh = os.environ.get(AUTO_DTYPE_ENV, "").strip().lower() == "probe"
    probe = None if fresh else stored_probe()
    if probe is not None:
        log.info(probe.summary(), measured=probe.measured)
        return probe
    path = probe_file(machine_key())
    probe = measure_probe()
    try:
        atomic_write_text(path, json.dumps(asdict(probe), indent=1))
    except OSError as error:  # a read-only cache costs the next process the probe's time, nothing else
        log.warning("could not cache the dtype probe", path=str(path), error=str(error))
    log.info(probe.summary(), cached=str(path))
    return probe


@functools.cache
def _forced_probe(dtype: str) -> DtypeProbe:
    machine = cpu_summary()
    probe = DtypeProbe({}, dtype, machine["cpu"], machine["flags"], "", 0, "", forced=True)
    log.info(probe.summary())
    return probe


def dtype_probe() -> DtypeProbe:
    """This machine's probe: forced by ``FSLM_AUTO_DTYPE``, else read from the cache or measured once."""
    forced = forced_dtype()
    return _cached_probe() if forced is None else _forced_probe(forced)


def measure_probe() -> DtypeProbe:
    """Time decoding steps in float32, bf16 (on CPUs with native bf16) and int8 (where fbgemm exists).

    The dtypes take turns, round after round, and each keeps its median: a
    slow spell of a shared machine falls on all of them alike.
    """
    import torch

    from .int8_linear import int8_available

    machine = cpu_summary()
    dtypes = ["float32"]
    if has_native_bf16(machine["flags"]):
        dtypes.append("bfloat16")
    if int8_available():
        dtypes.append("int8")
    timers = {dtype: _step_timer(dtype) for dtype in dtypes}
    rounds: dict[str, list[float]] = {dtype: [] for dtype in dtypes}
    for _ in range(PROBE_REPEATS):
        for dtype, timer in timers.items():
            rounds[dtype].append(timer())
    step_ms = {dtype: round(statistics.median(times), 2) for dtype, times in rounds.items()}
    return DtypeProbe(
        step_ms=step_ms,
        choice=choose_auto_dtype(step_ms, machine["flags"]),
        cpu=machine["cpu"],
        flags=machine["flags"],
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        measured=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )


def _probe_model(dtype: str):
    """A four-layer Llama of SmolLM2's shapes with one LoRA adapter, tuned as the engine tunes ``dtype``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from .cpu_tuning import contiguous_head_input, tune_for_cpu
    from .int8_linear import quantize_linear_layers

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**PROBE_SHAPES, tie_word_embeddings=True)).eval()
    if dtype == "bfloat16":
        model = model.to(torch.bfloat16)
    if dtype == "int8":
        quantize_linear_layers(model, torch.arange(10, 10 + PROBE_PROMPT_TOKENS)[None])
        contiguous_head_input(model)
    else:
        tune_for_cpu(model)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    with warnings.catch_warnings():  # peft's deprecation notices are about its internals, not this probe
        warnings.simplefilter("ignore")
        return get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=targets)).eval()


def _step_timer(dtype: str):
    """A function timing one decoding step of :data:`PROBE_ROWS` rows in ``dtype`` (milliseconds), warmed up."""
    import torch

    from ..declarations import GenerationSettings
    from .decoding import decode

    model = _probe_model(dtype)
    prompts = [[(7 * row + token) % 1000 + 10 for token in range(PROBE_PROMPT_TOKENS)] for row in range(PROBE_ROWS)]
    never = {PROBE_SHAPES["vocab_size"] + 1}  # no row ends early: every step has all rows

    def run(steps: int) -> float:
        started = time.perf_counter()
        with torch.inference_mode():
            decode(model, prompts, GenerationSettings(max_new_tokens=steps), never, 0)
        return time.perf_counter() - started

    def step_ms() -> float:
        prefill = run(1)
        return max(run(1 + PROBE_STEPS) - prefill, 1e-6) / PROBE_STEPS * 1000

    run(2)  # warm-up: kernels chosen, memory allocated
    return step_ms
