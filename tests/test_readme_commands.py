"""The commands of the README and of the docs work as pasted, from where the text says to run them.

Every shell line of the README's and docs' ``sh`` blocks is checked: the cheap
ones run as pasted (from a copy of the repository root's layout, with this
virtualenv's scripts first on PATH, as after ``source .venv/bin/activate``);
the ones that train or evaluate for minutes are parsed by their own command
line, in this process, without running (unknown options, bad values and missing
arguments fail), and every file they read must exist. The
README's ``fslm run`` example must print exactly its captured output, and its
Python example must answer sensibly on the embedded model.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

from fslm_core.cli.app import cli
from fslm_core.lmeval import task_folders

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# The docs of the commands this repository's user path goes through; training.md and performance.md
# describe long runs with their own data paths.
DOCS = [ROOT / "docs" / "evaluation.md", ROOT / "docs" / "plugins.md"]
BIN = Path(sys.executable).parent

# Run as pasted: a few seconds each.
CHEAP = ("fslm plugins", "fslm new-stack", "fslm tasks-dir")
# Not run here: the set-up commands are what CI runs; the user install is `make test-wheels`; the
# launchers start the fslm commands checked here in several processes; the rest changes the shell.
ELSEWHERE = (
    "make ",
    "source ",
    "python3 -m venv",
    "~/fslm-env/bin/pip",
    "pip install",
    "unset ",
    "accelerate launch",
    "OMP_NUM_THREADS=",
    "torchrun ",
)
# Parsed by their program's own parser, not run: they load models for minutes.
PARSED = ("fslm ", "python -m fslm_core.lmeval", "lm_eval ")
# Options whose value is a file or folder the command reads.
READS = {"--input", "--data", "--stack", "--config"}


def fenced_blocks(path: Path, *languages: str) -> list[str]:
    pattern = rf"^```(?:{'|'.join(languages)})\n(.*?)^```"
    return re.findall(pattern, path.read_text(encoding="utf-8"), flags=re.S | re.M)


def without_comment(line: str) -> str:
    """``line`` up to a ``#`` that starts a shell comment (outside quotes, after a space)."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].rstrip()
    return line.rstrip()


def shell_commands(path: Path) -> list[str]:
    """The commands of a markdown file's shell blocks: continuation lines joined, comments dropped."""
    commands = []
    for block in fenced_blocks(path, "sh", "bash"):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = without_comment(line.strip())
            if line:
                commands.append(line)
    return commands


def environment() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "FSLM_DATA_DIR")}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return env


def run(command: str, cwd: Path, timeout: int = 900, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, shell=True, cwd=cwd, env={**environment(), **env}, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def repository_layout(tmp_path_factory) -> Path:
    """The repository root as a user sees it, without letting commands write into the checkout."""
    root = tmp_path_factory.mktemp("checkout")
    for name in ("examples", "tests", "plugins", "docs", "constraints.txt"):
        (root / name).symlink_to(ROOT / name)
    return root


def files_read(command: str) -> list[str]:
    words = shlex.split(command)
    paths = [words[i + 1] for i, word in enumerate(words[:-1]) if word in READS]
    if words[:2] == ["fslm", "train"] and len(words) > 2:
        paths.append(words[2])  # the distilled folder
    return paths


def outputs(command: str) -> list[str]:
    words = shlex.split(command)
    written = [words[i + 1] for i, word in enumerate(words[:-1]) if word == "--output"]
    if words[:2] == ["fslm", "new-stack"]:
        written.append(words[2])
    return [path.rstrip("/") for path in written]


def check_commands(commands: list[str], cwd: Path, placeholders: set[str]) -> None:
    """Run the cheap commands, parse the others, and check the files each reads exist or were written before."""
    written: set[str] = set()
    for command in commands:
        if command.startswith(ELSEWHERE):
            continue
        for path in files_read(command):
            if path.rstrip("/") in written or path.rstrip("/") in placeholders:
                continue
            assert (cwd / path).exists(), f"{command!r} reads {path}, which does not exist in {cwd}"
        if command.startswith(CHEAP):
            result = run(command, cwd)
            assert result.returncode == 0, f"{command!r}: {result.stderr[-2000:]}"
        else:
            assert command.startswith(PARSED), f"{command!r}: say in this test how to check it"
            parse(command)
        written.update(outputs(command))


def parse(command: str) -> None:
    """Parse a command line with the parser of its program, in this process: options, types, required values."""
    tasks_dir = str(task_folders()[0])
    words = shlex.split(command.replace('"$(fslm tasks-dir)"', shlex.quote(tasks_dir)))
    if words[0] == "fslm":
        root = click.Context(cli, info_name="fslm")
        name, *arguments = words[1:]
        subcommand = cli.get_command(root, name)
        assert subcommand is not None, f"{command!r}: no fslm command {name!r}"
        subcommand.make_context(name, arguments, parent=root).close()
        return
    from lm_eval._cli import HarnessCLI

    arguments = words[3:] if words[:3] == ["python", "-m", "fslm_core.lmeval"] else words[1:]
    saved = sys.argv
    sys.argv = ["lm_eval", *arguments]
    try:
        HarnessCLI().parse_args()  # exits on an unknown option or a bad value
    except SystemExit as exit_:
        raise AssertionError(f"{command!r} does not parse (exit {exit_.code})") from None
    finally:
        sys.argv = saved


@pytest.mark.slow  # three fslm processes: about 15 s
def test_readme_shell_commands_run_or_parse_from_the_repository_root(repository_layout):
    commands = shell_commands(README)
    assert 'fslm run "What is the capital of France?"' in commands
    assert "fslm run --input examples/questions.txt --output traces.jsonl" in commands
    check_commands(commands, repository_layout, placeholders=set())
    assert (repository_layout / "my-stack.yaml").is_file()  # `fslm new-stack my-stack.yaml` ran


def test_docs_commands_parse(repository_layout):
    commands = [command for path in DOCS for command in shell_commands(path)]
    assert commands
    # The docs name the user's own stacks and output folders; the README shows how to make them.
    check_commands(commands, repository_layout, placeholders={"my-stack", "eval-out", "lm-eval-out", "tiny-out"})


@pytest.mark.slow  # loads the embedded model and runs the four-stage stack: a minute or two
def test_fslm_run_prints_exactly_the_captured_output_of_the_readme(repository_layout, report_measurement):
    text = README.read_text(encoding="utf-8")
    command = 'fslm run "What is the capital of France?"'
    captured = next(block for block in fenced_blocks(README, "text") if block.startswith("prompt: What is the capital"))
    assert f"What `{command}` prints, captured (stdout; stderr\nstays empty)" in text
    assert "captured where `auto` computes in float32" in text
    # bf16 words some answers differently (docs/performance.md): the capture is float32's, whatever this CPU picks.
    result = run(command, repository_layout, FSLM_AUTO_DTYPE="float32")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr == ""
    assert result.stdout.strip() == captured.strip()


@pytest.mark.slow  # loads the embedded model: a minute
def test_readme_python_example_answers_sensibly(repository_layout):
    (example,) = fenced_blocks(README, "python")
    script = repository_layout / "readme_example.py"
    script.write_text(example)
    result = run(f"python {script.name}", repository_layout)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr == ""
    answer = next(line for line in result.stdout.splitlines() if line.startswith("answer: "))
    assert "8" in answer or "eight" in answer.lower(), result.stdout
    assert (repository_layout / "my-stack" / "stack.yaml").is_file()
