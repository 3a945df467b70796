"""``python -m MODULE ARGS`` in a fresh process, without paying for torch's and MONAI's imports (~6 s) each time.

Run as a script, this file imports torch, MONAI and Ignite (never monai_adv, never a torch operation: no thread pool,
no state to inherit), then reads one request per line on stdin, ``{"module", "args", "env", "cwd", "stdout",
"stderr"}``, forks a child for it and answers ``{"returncode": N}`` when the child ends. The child is what ``python -m
MODULE ARGS`` with that environment and working directory would be, from ``sys.path[0]`` on: its own process, output
in the two files, the module run as ``__main__``, an uncaught exception printed by ``sys.excepthook`` with exit status
1, non-daemon threads joined and ``atexit`` functions run before it exits.

:class:`PreloadedPython` starts this script and sends it requests; its ``run`` returns what ``subprocess.run(...,
capture_output=True, text=True)`` returns. Use it only where the test is not about the interpreter's start itself.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path


def _child(request: dict) -> int:
    import atexit
    import runpy
    import traceback

    null = os.open(os.devnull, os.O_RDONLY)  # not the server's request pipe
    os.dup2(null, 0)
    os.close(null)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.path[0] = os.getcwd()  # what ``python -m`` puts first
    threads = request["env"].get("OMP_NUM_THREADS", "")
    if threads != SERVER_THREADS:
        import torch  # the thread count a fresh process takes from its environment

        torch.set_num_threads(int(threads) if threads.isdigit() and int(threads) > 0 else os.cpu_count() or 1)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    sys.argv = [request["module"], *request["args"]]
    code = 0
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        if stop.code is None:
            code = 0
        elif isinstance(stop.code, int):
            code = stop.code
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - what the interpreter does with an uncaught exception
        sys.excepthook(*sys.exc_info())
        code = 1
    try:  # the interpreter's shutdown: non-daemon threads, then atexit
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        code = code or 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    return code


SERVER_THREADS = os.environ.get("OMP_NUM_THREADS", "")


def _serve() -> None:
    import importlib

    for name in ("torch", "ignite.engine", "monai.bundle", "monai.handlers"):  # what every bundle run imports
        importlib.import_module(name)

    answers = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _child(request)
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        answers.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")
        answers.flush()


class PreloadedPython:
    """The server above, started on first use with this process's environment and stopped by :meth:`close`."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.lock = threading.Lock()
        self.folder = Path(tempfile.mkdtemp(prefix="preloaded_python_"))
        self.count = 0

    def run(self, module: str, args: list[str], env: dict[str, str], cwd: Path | str,
            timeout: float = 900) -> subprocess.CompletedProcess:
        with self.lock:
            if self.process is None:
                self.process = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE,
                                                stdout=subprocess.PIPE, text=True, env=dict(os.environ),
                                                cwd=Path(__file__).parent, start_new_session=True)
            self.count += 1
            out, err = self.folder / f"{self.count}.out", self.folder / f"{self.count}.err"
            request = {"module": module, "args": [str(a) for a in args], "env": dict(env), "cwd": str(cwd),
                       "stdout": str(out), "stderr": str(err)}
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            if not select.select([self.process.stdout], [], [], timeout)[0]:
                os.killpg(self.process.pid, signal.SIGKILL)  # the server and the run it forked
                self.process.wait()
                self.process = None
                raise subprocess.TimeoutExpired(request["args"], timeout)
            answer = self.process.stdout.readline()
            assert answer, "the preloaded Python server ended"
            code = json.loads(answer)["returncode"]
            result = subprocess.CompletedProcess([sys.executable, "-m", module, *request["args"]], code,
                                                 out.read_text(errors="replace"), err.read_text(errors="replace"))
            out.unlink()
            err.unlink()
            return result

    def close(self) -> None:
        with self.lock:
            if self.process is not None:
                self.process.stdin.close()
                self.process.wait(timeout=60)
                self.process = None
            try:
                self.folder.rmdir()
            except OSError:
                pass


if __name__ == "__main__":
    _serve()
