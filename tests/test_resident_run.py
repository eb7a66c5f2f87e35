"""`fslm run` through a running `fslm serve`: the same trace, printed stage by stage, without loading a model."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_fslm_run_answers_through_a_running_server_stage_by_stage(tiny_model_id, tiny_adapters, tmp_path):
    from serve_process import Server
    from test_cli_errors import run_cli
    from tiny_stacks import two_stage_stack

    folder = two_stage_stack(tiny_model_id, tiny_adapters, name="tiny-resident", dtype="float32").save(
        tmp_path / "stack"
    )
    local = run_cli("run", "--stack", str(folder), "--local", "What is 12 + 7?")
    server = Server([str(folder)], log_dir=tmp_path)
    try:
        server.wait_ready()
        remote = run_cli("run", "--server", server.url, "--stack", "tiny-resident", "What is 12 + 7?")
        assert remote.returncode == 0, remote.stderr
        assert f"answering through fslm serve at {server.url}" in remote.stderr
        assert remote.stdout == local.stdout  # the same trace, printed the same way
        wrong = run_cli("run", "--server", server.url, "--stack", "elsewhere", "hi")
        assert wrong.returncode == 1 and f"--server: {server.url} does not serve 'elsewhere'" in wrong.stderr
        # Served by name, it is not the installation's default: a run that names no stack is not sent there.
        no_default = run_cli("run", "--server", server.url, "hi")
        assert no_default.returncode == 1 and "not the default stack; name one with --stack" in no_default.stderr
        mixed = run_cli("run", "--server", server.url, "--dtype", "float32", "hi")
        assert mixed.returncode == 2 and "--server answers with the server's settings" in mixed.stderr
    finally:
        server.stop()
    gone = run_cli("run", "--server", server.url, "--stack", "tiny-resident", "hi")
    assert gone.returncode == 1 and f"--server: no fslm server is ready at {server.url}" in gone.stderr
