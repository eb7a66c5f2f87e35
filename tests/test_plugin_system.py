"""The plugin manager: built-ins and entry points, providers, broken plugins, switches."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from fslm_core import hookimpl, register_plugin
from fslm_core.errors import PluginError, UnknownNameError
from fslm_core.plugins import get_registry


def fake_distribution(root, name, modules: dict[str, str], entry_points: dict[str, str]):
    """A distribution on disk: importable modules plus a dist-info folder declaring `fslm` entry points."""
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = "\n".join(f"{ep} = {target}" for ep, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[fslm]\n{lines}\n")


def fslm(*args, env_extra=None, pythonpath=None):
    env = dict(os.environ, **(env_extra or {}))
    if pythonpath:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [sys.executable, "-m", "fslm_core.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_builtins_register_through_hooks_with_their_provider(fresh_registry):
    registry = get_registry()
    assert {"text", "list", "key-value", "json"} <= set(registry.names("formats"))
    assert {"sequential", "parallel"} <= set(registry.names("routers"))
    assert "fslm-paper" in registry.names("decompositions")
    assert registry.provider("routers", "parallel").distribution == "fslm-core"
    assert registry.provider("models", "smollm2-135m-instruct").distribution == "fslm-plugin-smollm2"


def test_unknown_names_list_the_known_ones(fresh_registry):
    registry = get_registry()
    with pytest.raises(UnknownNameError) as caught:
        registry.model("no-such-model", field="stages.0.model")
    assert "stages.0.model" in str(caught.value) and "smollm2-135m-instruct" in str(caught.value)
    with pytest.raises(UnknownNameError, match="known: fslm-paper"):
        registry.decomposition("nope")


def test_hf_prefix_resolves_any_transformers_model(fresh_registry):
    spec = get_registry().model("hf:/some/folder")
    assert spec.backend == "transformers" and spec.source == "/some/folder"


def test_plugin_registered_in_process_adds_items(fresh_registry):
    from fslm_core.api import MessageFormat

    class Shout(MessageFormat):
        name = "shout"

        def render(self, text, fields):
            return text.upper()

    class ShoutPlugin:
        @hookimpl
        def register_formats(self, register):
            register(Shout())

    register_plugin(ShoutPlugin(), name="shout-plugin")
    registry = get_registry()
    assert registry.format("shout").render("hi", None) == "HI"
    assert registry.provider("formats", "shout").plugin == "shout-plugin"


def test_unknown_hook_name_is_refused(fresh_registry):
    class Typo:
        @hookimpl
        def register_modles(self, register):
            pass

    with pytest.raises(PluginError, match="register_modles"):
        register_plugin(Typo(), name="typo")


def test_plugin_raising_during_registration_is_named_and_the_rest_load(fresh_registry):
    class Exploding:
        @hookimpl
        def register_routers(self, register):
            raise RuntimeError("boom")

    register_plugin(Exploding(), name="exploding")
    registry = get_registry()
    assert [(b.name, b.stage) for b in registry.broken] == [("exploding", "register_routers")]
    assert "parallel" in registry.names("routers")


def test_registration_follows_pluggy_order_tryfirst_trylast_and_wrappers(fresh_registry):
    from fslm_core.api import MessageFormat

    calls = []

    def format_plugin(label, **marker):
        class Format(MessageFormat):
            name = "shared-name"
            description = label

        class Plugin:
            @hookimpl(**marker)
            def register_formats(self, register):
                calls.append(label)
                register(Format())

        return Plugin()

    class Wrapper:
        @hookimpl(wrapper=True)
        def register_formats(self, register):
            calls.append("before")
            result = yield
            calls.append("after")
            return result

    # Registered in this order; pluggy calls tryfirst first and trylast last, else the latest plugin first.
    register_plugin(format_plugin("last", trylast=True), name="last")
    register_plugin(format_plugin("first", tryfirst=True), name="first")
    register_plugin(format_plugin("middle"), name="middle")
    calls.clear()  # each registration rebuilt the registry; count only the last build
    register_plugin(Wrapper(), name="wrapper")
    registry = get_registry()

    assert [call for call in calls if call not in ("before", "after")] == ["first", "middle", "last"]
    assert registry.format("shared-name").description == "first"  # the first one called wins
    assert registry.provider("formats", "shared-name").plugin == "first"
    assert calls[:3] == ["before", "first", "after"]  # the wrapper wraps each plugin's call
    assert calls.count("before") == calls.count("after") == 4  # three plugins and the built-in formats
    assert registry.provider("formats", "text").plugin == "formats"  # built-ins are tryfirst too
    assert registry.broken == []


def test_broken_external_plugins_are_reported_and_others_still_load(tmp_path):
    fake_distribution(
        tmp_path,
        "fslm-plugin-broken",
        {
            "broken_on_import": "raise ImportError('missing dependency xyz')",
            "broken_on_register": """
                from fslm_core import hookimpl

                @hookimpl
                def register_models(register):
                    raise ValueError('bad spec')
            """,
            "misspelt_hook": """
                from fslm_core import hookimpl

                @hookimpl
                def register_model(register):
                    pass
            """,
        },
        {"importfail": "broken_on_import", "registerfail": "broken_on_register", "misspelt": "misspelt_hook"},
    )
    result = fslm("plugins", "--json", pythonpath=tmp_path)
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    broken = {item["name"]: item for item in listing["broken"]}
    assert broken["importfail"]["stage"] == "import" and "xyz" in broken["importfail"]["error"]
    assert broken["registerfail"]["stage"] == "register_models"
    assert broken["misspelt"]["stage"] == "check_pending"
    assert "smollm2-135m-instruct" in [row["name"] for row in listing["models"]]
    assert "FSLM_DISABLE_PLUGINS=importfail" in result.stderr

    text = fslm("plugins", pythonpath=tmp_path)
    assert "broken plugin importfail" in text.stdout

    disabled = fslm(
        "plugins", "--json", pythonpath=tmp_path, env_extra={"FSLM_DISABLE_PLUGINS": "importfail,registerfail,misspelt"}
    )
    assert json.loads(disabled.stdout)["broken"] == []


def test_environment_switches_limit_external_plugins():
    only_core = json.loads(fslm("plugins", "--json", env_extra={"FSLM_DISABLE_PLUGINS": "1"}).stdout)
    assert "smollm2-135m-instruct" not in [row["name"] for row in only_core["models"]]
    assert "fslm-paper" in [row["name"] for row in only_core["decompositions"]]

    selected = json.loads(fslm("plugins", "--json", env_extra={"FSLM_LOAD_PLUGINS": "smollm2"}).stdout)
    providers = {row["distribution"] for kind in ("models", "benchmarks") for row in selected[kind]}
    assert providers == {"fslm-plugin-smollm2"}


def test_plugins_command_lists_models_with_provider_and_memory():
    result = fslm("plugins")
    assert result.returncode == 0
    line = next(line for line in result.stdout.splitlines() if "smollm2-135m-instruct" in line)
    assert "fslm-plugin-smollm2" in line and "GB" in line
