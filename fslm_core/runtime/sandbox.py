"""Running a program a model wrote: in a separate, limited Python process, never in fslm's own.

:func:`run_program` writes the program to a new temporary folder and starts
``python -I -S -B`` there (isolated mode: no ``PYTHON*`` variables, no user or
site packages, no current folder on the path) with an empty environment and
no standard input. Before the program runs, a small trusted runner in that
process

* lowers its limits (``setrlimit``): CPU seconds, address space, size of any
  file it writes (its printed output goes to a file, so this caps the
  output), open files, no core dumps, and no new processes;
* when fslm runs as root, gives up root for ``nobody`` (so the process limit
  and the file permissions apply to it);
* installs an audit hook (PEP 578) that refuses, with a ``PermissionError``
  naming what was refused: starting processes (``os.system``, ``fork``,
  ``exec``, ``subprocess``), sockets, ``ctypes`` and other native-code
  loaders, signals to other processes, changes to the environment, and
  opening, listing or changing files outside the temporary folder and the
  standard library (reads) or outside the temporary folder (writes).

The parent kills the whole process group when the wall time runs out. Every
way a program can fail ends as :class:`ProgramResult` with ``ok=False`` and a
one-line ``error``; nothing raises into the caller.

What this does not stop (``docs/tools.md``): it is not a security boundary
against a determined attacker. There is no seccomp filter and no namespace, so
a flaw in CPython or in a standard-library C module reachable from pure
Python could escape the audit hook; timing, CPU-cache and ``/proc``-free side
channels are open; and a program can read standard-library files and learn
the Python version. Run fslm on machines where that is acceptable, or run the
tool stage on a server of its own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

NOBODY = 65534
PRELOADED = (
    "math", "cmath", "fractions", "decimal", "statistics", "itertools", "functools", "collections", "datetime",
    "calendar", "re", "random", "string", "heapq", "bisect", "operator", "numbers", "typing", "dataclasses", "enum",
    "json", "textwrap", "copy", "time",
)  # fmt: skip
"""Imported before the program starts: where fslm runs as root, the program runs as ``nobody``, which may not
read the standard library's folder, so these are the modules it can use there (elsewhere, any standard module)."""


@dataclass(frozen=True)
class SandboxLimits:
    """What one program may use."""

    wall_seconds: float = 10.0
    cpu_seconds: int = 5
    memory_bytes: int = 512 << 20
    output_bytes: int = 64 << 10
    open_files: int = 64


@dataclass(frozen=True)
class ProgramResult:
    """What a program printed (or the value asked for), or why it failed; and how long it took."""

    ok: bool
    output: str
    error: str | None
    seconds: float


# The runner is fslm's own code; it runs in the child before the program and is the only code
# there that is trusted. It reads its settings from argv[1] and the program from program.py.
_RUNNER = r"""
import json, os, resource, sys, traceback
settings = json.loads(sys.argv[1])
for name in settings["preload"]:
    __import__(name)
tmp = os.path.realpath(os.getcwd())
for limit, value in (
    (resource.RLIMIT_CPU, settings["cpu"]),
    (resource.RLIMIT_AS, settings["memory"]),
    (resource.RLIMIT_FSIZE, settings["output"]),
    (resource.RLIMIT_NOFILE, settings["files"]),
    (resource.RLIMIT_CORE, 0),
):
    resource.setrlimit(limit, (value, value))
if os.getuid() == 0:
    os.setgroups([])
    os.setgid(settings["nobody"])
    os.setuid(settings["nobody"])
resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
source = open("program.py", encoding="utf-8").read()
stdlib = (os.path.realpath(os.path.dirname(os.__file__)) + os.sep,)
blocked = {
    "os.system", "os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.kill", "os.killpg",
    "os.putenv", "os.unsetenv", "os.chmod", "os.chown", "os.link", "os.symlink", "os.truncate",
    "subprocess.Popen", "pty.spawn", "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo",
    "socket.gethostbyname", "socket.sendto", "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "ctypes.call_function",
    "sys.addaudithook", "sys.remote_exec", "_posixsubprocess.fork_exec", "mmap.__new__", "syslog.openlog",
    "webbrowser.open", "urllib.Request", "os.add_dll_directory", "signal.pthread_kill", "resource.setrlimit",
    "resource.prlimit",
}
modules = {"ctypes", "_ctypes", "multiprocessing", "_posixsubprocess", "mmap", "_xxsubinterpreters", "_interpreters"}
path_events = {"os.listdir", "os.scandir", "os.remove", "os.rename", "os.rmdir", "os.mkdir", "shutil.rmtree",
               "os.chdir", "shutil.copyfile", "shutil.move", "os.utime", "glob.glob"}
writes = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "shutil.rmtree", "shutil.copyfile", "shutil.move",
          "os.utime"}
busy = []
def inside(path, roots):
    real = os.path.realpath(os.fsdecode(path)) if isinstance(path, (str, bytes, os.PathLike)) else None
    return real is not None and any(real == tmp or real.startswith(root) for root in (tmp + os.sep, *roots))
def hook(event, args):
    if busy:
        return
    busy.append(1)
    try:
        if event in blocked or event.startswith("os.exec") or event.startswith("os.spawn"):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "import" and args[0].split(".")[0] in modules:
            raise PermissionError(f"sandbox: importing {args[0]} is not allowed")
        if event == "open":
            path, mode, flags = args
            if isinstance(path, int):
                if path > 2:
                    raise PermissionError("sandbox: opening file descriptors is not allowed")
                return
            writing = any(c in (mode or "") for c in "wax+") or (flags or 0) & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            if not inside(path, () if writing else stdlib):
                verb = "writing" if writing else "reading"
                raise PermissionError(f"sandbox: {verb} {os.fsdecode(path)} is not allowed")
        if event in path_events:
            for path in args:
                if isinstance(path, (str, bytes, os.PathLike)) and not inside(path, () if event in writes else stdlib):
                    raise PermissionError(f"sandbox: {event} on {os.fsdecode(path)} is not allowed")
    finally:
        busy.pop()
namespace = {"__name__": "__main__", "__builtins__": __builtins__}
sys.addaudithook(hook)
try:
    exec(compile(source, "program.py", "exec"), namespace)
    if settings["variable"]:
        if settings["variable"] not in namespace:
            raise NameError(f"the program sets no variable {settings['variable']!r}")
        print(namespace[settings["variable"]])
    sys.stdout.flush()
except BaseException as error:
    line = next((f.lineno for f in traceback.extract_tb(error.__traceback__) if f.filename == "program.py"), None)
    line = getattr(error, "lineno", None) if isinstance(error, SyntaxError) else line
    where = f" (line {line})" if line else ""
    message = str(error).splitlines()[0] if str(error).strip() else ""
    sys.stderr.write(f"{type(error).__name__}{where}: {message}"[:300] + "\n")
    sys.stderr.flush()
    os._exit(3)
"""


def run_program(source: str, limits: SandboxLimits = SandboxLimits(), variable: str | None = None) -> ProgramResult:
    """Run ``source`` in a limited process; what it printed, or the value of ``variable`` after it ran."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fslm-sandbox-") as folder:
        tmp = Path(folder)
        (tmp / "program.py").write_text(source, encoding="utf-8")
        settings = {
            "cpu": limits.cpu_seconds,
            "memory": limits.memory_bytes,
            "output": limits.output_bytes,
            "files": limits.open_files,
            "variable": variable,
            "nobody": NOBODY,
            "preload": PRELOADED,
        }
        if os.getuid() == 0:  # the program will run as nobody: it may use this folder and nothing of root's
            os.chown(tmp, NOBODY, NOBODY)
            (tmp / "program.py").chmod(0o644)
        with open(tmp / "stdout", "wb") as out, open(tmp / "stderr", "wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-I", "-S", "-B", "-c", _RUNNER, json.dumps(settings)],
                cwd=tmp,
                env={"LC_ALL": "C.UTF-8", "PYTHONIOENCODING": "utf-8"},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                close_fds=True,
            )
            timed_out = False
            try:
                process.wait(timeout=limits.wall_seconds)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(process)
        output = _read_at_most(tmp / "stdout", limits.output_bytes)
        error_text = _read_at_most(tmp / "stderr", 2000).strip().splitlines()
    seconds = time.perf_counter() - started
    code = process.returncode
    if timed_out:
        return ProgramResult(False, output, f"timed out after {limits.wall_seconds:g} s", seconds)
    if code == 0:
        return ProgramResult(True, output, None, seconds)
    return ProgramResult(False, output, _why(code, error_text, limits), seconds)


def _kill_group(process: subprocess.Popen) -> None:
    """End the program and anything it managed to start, and reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def _read_at_most(path: Path, limit: int) -> str:
    with open(path, "rb") as file:
        return file.read(limit).decode("utf-8", errors="replace")


def _why(code: int, error_lines: list[str], limits: SandboxLimits) -> str:
    """One line saying why a program ended with ``code``."""
    last = error_lines[-1] if error_lines else ""
    if code == -signal.SIGXCPU or code == -signal.SIGKILL and not last:
        return f"used more than {limits.cpu_seconds} s of CPU time"
    if code == -signal.SIGXFSZ or "File too large" in last:
        return f"printed more than {limits.output_bytes // 1024} kB"
    if last.startswith("MemoryError"):
        return f"MemoryError: used more than {limits.memory_bytes >> 20} MB"
    if last:
        return last
    return f"ended with status {code}"
