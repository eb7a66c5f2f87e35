"""Copy the trained GSM8K stacks into fslm-plugin-smollm2-gsm8k: float16 adapters, stack files, targets.

    python examples/gsm8k_experiment/package.py RUN_FOLDER
    python examples/gsm8k_experiment/package.py --templates TEMPLATES_RUN_FOLDER

RUN_FOLDER holds ``program-trained/`` and ``solution-trained/`` (what ``fslm
train`` wrote) and ``program-targets/`` (what the program stage learnt from).
TEMPLATES_RUN_FOLDER holds the ``program-trained/`` stack whose stage also
learnt from template problems (``synthetic_problems.py``); it becomes
``smollm2-gsm8k-templates`` and touches nothing else in the plugin.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fslm_core import Stack, load_stack
from fslm_core.declarations import Vote
from fslm_core.experiment.package import package_stack, write_half_precision_stack
from fslm_core.files import atomic_write_text
from fslm_core.stage_settings import Deferral, Fallback

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "plugins" / "fslm-plugin-smollm2-gsm8k" / "fslm_plugin_smollm2_gsm8k"
VOTE = {"samples": 5, "temperature": 0.7}
WHOLE = "whole_number"  # every GSM8K answer is a whole number


def voting_stack(package: Path, name: str, description: str, vote: Vote) -> Stack:
    """The shipped stack (``package/stack``) sampling programs and voting by ``vote``."""
    stack = load_stack(package / "stack")
    program = stack.stage("program")
    sampling = program.generation.model_copy(update={"temperature": VOTE["temperature"]})
    voting = program.model_copy(update={"samples": VOTE["samples"], "vote": vote, "generation": sampling})
    stages = tuple(voting if stage.name == "program" else stage for stage in stack.stages)
    return stack.model_copy(update={"name": name, "stages": stages, "description": description})


def write_beside(stack: Stack, package: Path, path: Path) -> None:
    """``stack`` written to ``path`` (a file in a folder beside ``stack/``), reading ``stack/``'s adapter."""
    text = stack.to_yaml(relative_to=package / "stack")
    # The adapter is stack/'s: written relative to the new folder, so the package can move.
    text = text.replace("adapter: adapters/program", "adapter: ../stack/adapters/program")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    assert load_stack(path).stage("program").adapter == (package / "stack" / "adapters" / "program").resolve()


def write_vote_stack(package: Path) -> None:
    """``vote/stack.yaml``: the shipped stack sampling programs and voting, reading ``stack/``'s adapter."""
    description = f"{load_stack(package / 'stack').description} Five sampled programs, a vote."
    voted = voting_stack(package, "smollm2-gsm8k-vote", description, Vote(by="python"))
    write_beside(voted, package, package / "vote" / "stack.yaml")


def write_retry_stack(package: Path) -> None:
    """``retry/``: the shipped stack answering again, by five sampled programs and a vote among those that print
    a whole number (``retry/fallback.yaml``), where its own answer is not a whole number."""
    fallback = voting_stack(
        package,
        "smollm2-gsm8k-vote-whole",
        "smollm2-gsm8k sampling five programs; the most common whole number printed wins.",
        Vote(by="python", answer_form=WHOLE),
    )
    write_beside(fallback, package, package / "retry" / "fallback.yaml")
    stack = load_stack(package / "stack")
    retry = stack.model_copy(
        update={
            "name": "smollm2-gsm8k-retry",
            "description": f"{stack.description} An answer that is not a whole number is answered again by "
            "five sampled programs and a vote.",
            "fallback": Fallback(stack="fallback.yaml", generation=Deferral(answer_form=WHOLE)),
        }
    )
    write_beside(retry, package, package / "retry" / "stack.yaml")
    assert load_stack(package / "retry").fallback.stack == str((package / "retry" / "fallback.yaml").resolve())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, nargs="?")
    parser.add_argument("--templates", type=Path, metavar="TEMPLATES_RUN_FOLDER")
    args = parser.parse_args()
    if args.run is None and args.templates is None:
        parser.error("give RUN_FOLDER, --templates TEMPLATES_RUN_FOLDER or both")
    if args.templates is not None:
        write_half_precision_stack(
            args.templates / "program-trained",
            PACKAGE / "templates",
            "smollm2-gsm8k-templates",
            "SmolLM2-135M-Instruct writes a Python program for a grade-school maths problem (its stage also learnt "
            "from 3,000 template problems); a sandboxed interpreter runs it and the calculator writes its output "
            "as a number.",
        )
        print(f"smollm2-gsm8k-templates -> {PACKAGE / 'templates'}")
    if args.run is None:
        return
    written = package_stack(
        args.run / "program-trained",
        args.run / "program-targets",
        PACKAGE,
        "smollm2-gsm8k",
        "SmolLM2-135M-Instruct writes a Python program for a grade-school maths problem; a sandboxed "
        "interpreter runs it and the calculator writes its output as a number.",
    )
    if (args.run / "solution-trained" / "stack.yaml").is_file():  # trained after the stack: packaged when there
        write_half_precision_stack(
            args.run / "solution-trained",
            PACKAGE / "baseline",
            "smollm2-gsm8k-baseline",
            "SmolLM2-135M-Instruct with one adapter trained on the same rows' GSM8K reference solutions.",
        )
    write_vote_stack(PACKAGE)
    write_retry_stack(PACKAGE)
    print(f"{written['examples']} targets, {written['bytes'] / 1e6:.1f} MB -> {PACKAGE}")


if __name__ == "__main__":
    main()
