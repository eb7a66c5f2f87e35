"""Stage and Stack declarations: validation names the field, save/load round-trips exactly."""

import pytest
import yaml
from pydantic import ValidationError

from fslm_core import GenerationSettings, Stack, Stage, load_stack
from fslm_core.declarations import validate_stack
from fslm_core.errors import InputError, StackFileError
from fslm_core.yaml_edit import set_yaml_value


def stage(name="one", **fields):
    return Stage(name=name, model="hf:some/model", instruction="Do it.", **fields)


def test_stack_round_trips_through_yaml_file_and_folder(tmp_path, tiny_adapters):
    stack = Stack(
        name="demo",
        description="two stages",
        router="parallel",
        stages=[
            stage(
                "first",
                adapter=tiny_adapters[0],
                format="list",
                generation=GenerationSettings(max_new_tokens=7, stop=["\n\n"]),
            ),
            stage("second", reads=["first"], template="Q: {prompt}\nNotes: {first}"),
        ],
    )
    file_path = stack.save(tmp_path / "demo.yaml")
    assert file_path == tmp_path / "demo.yaml"
    assert load_stack(file_path) == stack

    folder_file = stack.save(tmp_path / "folder")
    assert folder_file == tmp_path / "folder" / "stack.yaml"
    assert load_stack(tmp_path / "folder") == stack


def test_adapter_paths_inside_a_stack_folder_are_written_relative(tmp_path, tiny_adapters):
    import shutil

    folder = tmp_path / "stack"
    shutil.copytree(tiny_adapters[1], folder / "adapters" / "one")
    stack = Stack(name="s", stages=[stage(adapter=folder / "adapters" / "one")])
    stack.save(folder)
    assert "adapter: adapters/one" in (folder / "stack.yaml").read_text()

    moved = tmp_path / "moved"
    folder.rename(moved)
    assert load_stack(moved).stages[0].adapter == (moved / "adapters" / "one").resolve()


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    stack = Stack(name="s", stages=[stage()])
    stack.save(tmp_path / "s.yaml")
    stack.save(tmp_path / "s.yaml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


@pytest.mark.parametrize(
    ("stages", "field"),
    [
        (
            [{"name": "a", "model": "m", "instruction": "x"}, {"name": "a", "model": "m", "instruction": "x"}],
            "stages.1.name",
        ),
        ([{"name": "a", "model": "m", "instruction": "x", "reads": ["b"]}], "stages.0.reads"),
        ([{"name": "a", "model": "m", "instruction": "x", "template": "{nope}"}], "stages.0.template"),
        ([{"name": "a", "model": "m", "instruction": "x", "template": "{prompt"}], "stages.0.template"),
        ([{"name": "a", "model": "m", "instruction": ""}], "stages.0.instruction"),
        ([{"name": "Bad Name", "model": "m", "instruction": "x"}], "stages.0.name"),
        (
            [{"name": "a", "model": "m", "instruction": "x", "generation": {"max_new_tokens": 0}}],
            "stages.0.generation.max_new_tokens",
        ),
        ([{"name": "a", "model": "m", "instruction": "x", "adapter": "/does/not/exist"}], "stages.0.adapter"),
        ([{"name": "a", "model": "m", "instruction": "x", "colour": "red"}], "stages.0.colour"),
        ([{"name": "prompt", "model": "m", "instruction": "x"}], "stages.0.name"),
        ([], "stages"),
    ],
)
def test_invalid_declarations_name_the_field(stages, field):
    with pytest.raises(StackFileError) as caught:
        validate_stack({"name": "s", "stages": stages})
    message = str(caught.value)
    assert field in message
    assert "\n" not in message


def test_python_declarations_raise_pydantic_errors_naming_the_field():
    with pytest.raises(ValidationError, match="max_new_tokens"):
        GenerationSettings(max_new_tokens=-1)


def test_relative_paths_in_a_stack_file_resolve_against_its_folder(tmp_path, tiny_adapters):
    import shutil

    shutil.copytree(tiny_adapters[0], tmp_path / "my-adapter")
    (tmp_path / "stack.yaml").write_text(
        "name: s\nstages:\n- name: a\n  model: hf:x\n  instruction: go\n  adapter: my-adapter\n"
    )
    assert load_stack(tmp_path).stages[0].adapter == (tmp_path / "my-adapter").resolve()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("name: [unclosed", "not valid YAML"),
        ("- just\n- a list\n", "expected a mapping"),
        ("fslm_format: 99\nname: s\nstages: []\n", "fslm_format 99"),
    ],
)
def test_unreadable_stack_files_give_one_line_errors(tmp_path, content, expected):
    path = tmp_path / "stack.yaml"
    path.write_text(content)
    with pytest.raises(StackFileError, match=expected):
        load_stack(path)


def test_missing_stack_file(tmp_path):
    with pytest.raises(StackFileError, match="stack file not found"):
        load_stack(tmp_path / "nothing.yaml")


def test_stage_lookup_and_final_stage():
    stack = Stack(name="s", stages=[stage("a"), stage("b", reads=["a"])])
    assert stack.stage("a").name == "a"
    assert stack.final_stage.name == "b"


COMMENTED_STACK = """# why this cascade
name: cascade  # its name
fallback:
  model: big   # the larger model
  scoring:
    signal: choice_margin
    below: 0.5  # calibrated
  # generated answers are not deferred yet
stages: []
"""


@pytest.mark.parametrize(
    "keys, value, changed_line",
    [
        (
            ("fallback", "scoring"),
            {"signal": "choice_probability", "below": 0.9},
            "  scoring: {signal: choice_probability, below: 0.9}  # calibrated",
        ),
        (
            ("fallback", "generation"),
            {"signal": "min_logprob", "below": -2.0},
            "  generation: {signal: min_logprob, below: -2.0}",
        ),
        (("name",), "other", "name: other  # its name"),
    ],
    ids=["replace-block", "add-key", "replace-scalar"],
)
def test_a_value_set_in_a_yaml_file_keeps_its_comments(keys, value, changed_line):
    edited = set_yaml_value(COMMENTED_STACK, keys, value)
    assert changed_line in edited.splitlines()
    for comment in ("# why this cascade", "# the larger model", "# generated answers are not deferred yet"):
        assert comment in edited
    expected = yaml.safe_load(COMMENTED_STACK)
    target = expected
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value
    assert yaml.safe_load(edited) == expected


def test_a_value_set_in_a_flow_mapping_and_a_missing_mapping():
    assert set_yaml_value("fallback: {model: big}  # x\n", ("fallback", "scoring"), {"below": 1}) == (
        "fallback: {model: big, scoring: {below: 1}}  # x\n"
    )
    with pytest.raises(InputError, match="fallback: expected a mapping to set fallback.scoring in"):
        set_yaml_value("name: x\n", ("fallback", "scoring"), {"below": 1})
