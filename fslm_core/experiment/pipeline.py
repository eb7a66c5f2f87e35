"""``fslm experiment``: the paper's experiment as one resumable pipeline.

Steps, each writing into the experiment's output folder::

    distill         distilled/     teacher targets for every stage (resumes shard by shard)
    filter          filtered/      the examples whose targets pass their checks, tidied
    train-stack     stack/         one LoRA adapter per stage (resumes from checkpoints)
    package         the trained stack and its targets, copied into a plugin (``package`` in the config)
    train-baseline  baseline/      one adapter on the same examples: prompt to reference answer (also
                                   copied into the plugin, for comparison)
    stage-checks    stage_checks.json   held-out target loss and role checks, trained vs untrained
    evaluate        eval/<system>/<task>.json   every system on every task, same documents
    ablations       ablations.json other teachers and training variants on a slice (``ablations`` in the config)
    report          the Markdown report (``report`` in the config)

``experiment.json`` records which steps finished, with their figures; a rerun
of the same config skips them and continues the step in progress from its own
checkpoints (evaluation from its finished (system, task) pairs). A different
config for the same folder is refused. The report is rewritten on every run,
from whatever has finished, so ``--only report`` shows a run in progress.

The order puts what users receive first: the trained stack is packaged as
soon as it exists, before the hours of evaluation, and the ablations, which
only explain the choices, come last.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

from ..distillation import DistillConfig, distill, filter_distilled, load_distilled
from ..errors import InputError
from ..files import TMP_PREFIX, VersionedJson
from ..plugins import Registry, get_registry
from ..training import TrainConfig, train_stack
from ..validation import validate_settings
from .ablations import run_ablations
from .config import STEPS, ExperimentConfig
from .eval_runs import Evaluator, read_result
from .package import BASELINE_DATA, package_stack, write_half_precision_stack
from .report import write_report
from .stage_checks import run_stage_checks
from .systems import BASELINE_DIR, STACK_DIR, baseline_stack, paper_plan

STATE = VersionedJson(
    "experiment.json",
    "fslm_experiment",
    1,
    "the state of an fslm experiment",
    remedy="remove it or choose another output folder",
    field="output: ",
)
ALWAYS_RERUN = {"report"}
REUSABLE = {"distilled", ".gitignore"}
"""What a new experiment's folder may already hold."""


def _identity(config: ExperimentConfig) -> dict:
    """What decides the experiment's results: a resumed run must agree on all of it (the report path aside).

    The data file counts by its name and content, not its location, so a run
    committed from one checkout resumes from another.
    """
    settings = config.model_dump(
        mode="json", exclude={"data", "report", "output", "demo_prompts", "package", "package_stack_name"}
    )
    digest = hashlib.sha256(config.data.read_bytes()).hexdigest()
    return {**_set_values(settings), "data": {"file": config.data.name, "sha256": digest}}


def _changed_settings(recorded: dict, identity: dict) -> list[str]:
    recorded = _set_values(recorded)
    if isinstance(recorded.get("data"), str):
        # Written before the data was identified by content: its path is all there is to go on, and only
        # its file name survives a move to another checkout.
        recorded["data"] = identity["data"] if Path(recorded["data"]).name == identity["data"]["file"] else None
    return sorted(key for key in identity.keys() | recorded.keys() if recorded.get(key) != identity.get(key))


def _set_values(settings: dict) -> dict:
    """``settings`` without the keys whose value is None, at every depth.

    An unset setting and a missing one are the same: a run written before a
    setting existed holds no key for it, and resumes under a config that leaves it unset.
    """
    return {
        key: _set_values(value) if isinstance(value, dict) else value
        for key, value in settings.items()
        if value is not None
    }


class Experiment:
    def __init__(
        self,
        config: ExperimentConfig,
        *,
        echo: Callable[[str], None] = print,
        progress: bool = False,
        registry: Registry | None = None,
        command: str | None = None,
    ):
        self.config = config
        self.command = command
        self.output = config.output.expanduser().resolve()
        self.echo = echo
        self.progress = progress
        self.registry = registry or get_registry()
        # Everything checkable is checked before any model loads.
        self.registry.decomposition(config.decomposition, field="decomposition")
        self.registry.model(config.student, field="student")
        self.registry.model(config.distill.teacher, field="distill.teacher")
        self.train_config = validate_settings(TrainConfig, {"seed": config.seed, **config.train}, "config train")
        self.baseline_config = validate_settings(
            TrainConfig, {"seed": config.seed, **config.baseline}, "config baseline"
        )
        if not config.data.is_file():
            raise InputError(f"config data: file not found: {config.data}")
        if self.output.exists() and not self.output.is_dir():
            raise InputError(f"output: {self.output} is a file; give a folder")
        self.state = self._open_state()

    def _open_state(self) -> dict:
        identity = _identity(self.config)
        state = STATE.read(self.output) if self.output.is_dir() else None
        if state is None:
            # Distilled data may come first (it is the costly part); its own manifest guards its settings.
            strangers = (
                [
                    p.name
                    for p in self.output.iterdir()
                    if p.name not in REUSABLE and not p.name.startswith(TMP_PREFIX)  # an interrupted first save
                ]
                if self.output.is_dir()
                else []
            )
            if strangers:
                raise InputError(
                    f"output: {self.output} holds {', '.join(sorted(strangers)[:3])} but no {STATE.name}; "
                    "choose another folder"
                )
            return {"identity": identity, "steps": {}}
        changed = _changed_settings(state.get("identity", {}), identity)
        if changed:
            raise InputError(
                f"output: {self.output} holds an experiment with other settings (changed: {', '.join(changed)}); "
                "rerun with the same config to resume, or choose another output folder"
            )
        state["identity"] = identity  # an older record's form is replaced on the next save
        return state

    def _save(self) -> None:
        STATE.write(self.output, {key: value for key, value in self.state.items() if key != STATE.marker})

    def done(self, step: str) -> bool:
        if step == "filter" and not (self.output / "filtered" / "manifest.json").is_file():
            return False  # not kept with the run (seconds to redo from the distilled data)
        if step == "evaluate" and step in self.state["steps"]:
            # Results moved aside to be made again on newer code: the step runs the missing ones.
            evaluation = self.config.evaluation
            return all(
                read_result(self.output, system, task) is not None
                for system in self.config.systems
                for task in evaluation.tasks
            )
        return step in self.state["steps"]

    def run(self, until: str | None = None, only: str | None = None) -> dict:
        """Run the steps not done yet, in order (up to and including ``until``), or just ``only``; return the state."""
        for option, value in (("--until", until), ("--only", only)):
            if value is not None and value not in STEPS:
                raise InputError(f"{option}: expected one of {', '.join(STEPS)}, got {value!r}")
        self.output.mkdir(parents=True, exist_ok=True)
        if self.command and only is None:
            self.state["command"] = self.command
        self._save()
        for index, step in enumerate(STEPS, start=1):
            if only is not None and step != only:
                continue
            head = f"[{index}/{len(STEPS)}] {step}"
            if self.done(step) and step not in ALWAYS_RERUN:
                self.echo(f"{head}: done earlier ({self.state['steps'][step]['seconds']:.0f}s), skipped")
            else:
                self.echo(f"{head} ...")
                started = time.perf_counter()
                figures = getattr(self, "_" + step.replace("-", "_"))()
                seconds = round(time.perf_counter() - started, 1)
                self.state["steps"][step] = {"seconds": seconds, "finished": _now(), **figures}
                self._save()
                self.echo(f"{head}: done in {seconds:.0f}s")
            if step == until:
                break
        return self.state

    # Steps -----------------------------------------------------------------------------

    def _distill(self) -> dict:
        settings = self.config.distill
        config = DistillConfig(
            decomposition=self.config.decomposition,
            teacher=settings.teacher,
            teacher_prompt=settings.teacher_prompt,
            limit=settings.limit,
            batch_size=settings.batch_size,
            shard_size=settings.shard_size,
            max_new_tokens=settings.max_new_tokens,
            seed=self.config.seed,
        )
        summary = distill(self.config.data, self.output / "distilled", config, progress=self.progress)
        self.echo(f"  {summary.render()}")
        # Distillation may span several runs: the manifest sums their teacher time.
        manifest = json.loads((self.output / "distilled" / "manifest.json").read_text(encoding="utf-8"))
        self.state["distill_seconds"] = manifest.get("seconds") or summary.seconds
        return {"examples": summary.examples_total, "distill_seconds": self.state["distill_seconds"]}

    def _filter(self) -> dict:
        report = filter_distilled(
            self.output / "distilled",
            self.output / "filtered",
            registry=self.registry,
            check=self.config.filter_targets,
        )
        self.echo("  " + report.render().replace("\n", "\n  "))
        return report.as_dict()

    def _ablations(self) -> dict:
        if self.config.ablations is None:
            return {"ablations": None}
        results = run_ablations(self.config.ablations, self.config, self.output, self.registry, self.echo)
        return {"teachers": len(results["teachers"]), "variants": len(results["variants"])}

    def _train(self, folder: str, stack, config: TrainConfig) -> dict:
        result = train_stack(
            self.output / "filtered",
            self.output / folder,
            config,
            stack=stack,
            progress=self.progress,
            registry=self.registry,
        )
        self.echo("  " + result.render().replace("\n", "\n  "))
        return {
            "stages": {
                name: {
                    "examples": stage.examples,
                    "steps": stage.steps,
                    "tokens": stage.tokens,
                    "seconds": stage.seconds,
                    "first_loss": stage.first_loss,
                    "final_loss": stage.final_loss,
                }
                for name, stage in result.stages.items()
            },
            "held_out_examples": result.held_out_examples,
            # The report compares it with the filter's count if the filter runs again later.
            "filter_kept": self.state["steps"].get("filter", {}).get("kept"),
            "evaluation": result.evaluation,
        }

    def _train_stack(self) -> dict:
        decomposition = self.registry.decomposition(self.config.decomposition, field="decomposition")
        stack = decomposition.build(self.config.student, name=f"{self.config.name}")
        return self._train(STACK_DIR, stack, self.train_config)

    def _train_baseline(self) -> dict:
        figures = self._train(BASELINE_DIR, baseline_stack(self.config), self.baseline_config)
        if self.config.package is not None:
            name = f"{self._package_name()}-baseline"
            description = (
                f"the same-data baseline of {self._package_name()}: {self.config.student} with one adapter trained "
                "on the same examples (prompt to reference answer)"
            )
            write_half_precision_stack(
                self.output / BASELINE_DIR, self.config.package / BASELINE_DATA, name, description
            )
            self.echo(f"  the baseline copied into {self.config.package / BASELINE_DATA} as {name}")
        return figures

    def _package_name(self) -> str:
        return self.config.package_stack_name or self.config.name

    def _stage_checks(self) -> dict:
        data = load_distilled(self.output / "filtered")
        return run_stage_checks(self.config, self.output, data, self.train_config, self.registry, self.echo)

    def _evaluate(self) -> dict:
        Evaluator(paper_plan(self.config, self.output, self.registry), self.output, self.echo).run()
        return {}

    def _package(self) -> dict:
        if self.config.package is None:
            return {"package": None}
        description = (
            f"{self.config.decomposition} on {self.config.student}, trained by `fslm experiment` ({self.config.name})"
        )
        written = package_stack(
            self.output / STACK_DIR,
            self.output / "filtered",
            self.config.package,
            self._package_name(),
            description,
        )
        self.echo(
            f"  {written['examples']} examples' targets and the stack, {written['bytes'] / 1e6:.1f} MB, "
            f"copied into {self.config.package}"
        )
        return {"package": str(self.config.package), "bytes": written["bytes"]}

    def _report(self) -> dict:
        if self.config.report is None:
            return {"report": None}
        path = write_report(self.config, self.output, self.state, self.registry)
        self.echo(f"  report written to {path}")
        return {"report": str(path)}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def run_experiment(
    config: ExperimentConfig,
    *,
    until: str | None = None,
    only: str | None = None,
    echo: Callable[[str], None] = print,
    progress: bool = False,
    command: str | None = None,
) -> dict:
    """Run (or resume) the experiment ``config`` describes; return its state."""
    return Experiment(config, echo=echo, progress=progress, command=command).run(until=until, only=only)


__all__ = ["STEPS", "Experiment", "run_experiment"]
