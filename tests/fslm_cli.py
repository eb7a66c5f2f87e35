"""`fslm ...` run in the test's own process, so its output lands in pytest's capture."""

from __future__ import annotations

from fslm_core.cli import main


def run_fslm(capsys, *argv) -> tuple[int, str, str]:
    """Run ``fslm *argv``; return (exit code, stdout, stderr)."""
    code = 0
    try:
        main([str(arg) for arg in argv])
    except SystemExit as exit_:
        code = exit_.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err
