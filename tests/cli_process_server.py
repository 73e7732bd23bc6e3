"""Run ``captum-layerpair`` commands as real processes, quickly: a helper of tests/test_cli_errors.py.

Starting a Python interpreter and importing torch costs a second or two, too much for a table of many bad
inputs. This server imports the package once, then forks one child per request; the child runs the console
script's ``__main__`` exactly as a fresh process would (its own stdout/stderr file descriptors, Python's default
warning filters, the exit code of ``sys.exit`` or 1 with a traceback for an uncaught exception; ``sys.path`` as
for the installed console script, which does not hold the working folder).

Protocol: one JSON request per line on stdin ``{"argv": [...], "cwd": DIR, "timeout": S}``; one JSON answer per
line on stdout ``{"rc": int, "stdout": str, "stderr": str}``.
"""
import json
import os
import runpy
import signal
import sys
import tempfile
import time
import traceback

import torch

# the heavy imports, done once before forking
import captum_layerpair.cli
import captum_layerpair.demo
import captum_layerpair.report  # noqa: F401

torch.set_num_threads(1)


def _child(argv, cwd, out_path, err_path):
    code = 1
    try:
        os.chdir(cwd)
        for fd, path in ((1, out_path), (2, err_path)):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(target, fd)
            os.close(target)
        sys.argv = ["captum-layerpair", *argv]
        try:
            runpy.run_module("captum_layerpair", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as e:  # as the interpreter does at exit
            if e.code is None or isinstance(e.code, int):
                code = e.code or 0
            else:
                print(e.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _run(request):
    with tempfile.TemporaryDirectory() as folder:
        out_path, err_path = os.path.join(folder, "out"), os.path.join(folder, "err")
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            _child(request["argv"], request["cwd"], out_path, err_path)
        deadline = time.monotonic() + request.get("timeout", 120)
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                status = -1
                break
            time.sleep(0.005)
        rc = os.waitstatus_to_exitcode(status) if status != -1 else -9
        with open(out_path) as out, open(err_path) as err:
            return {"rc": rc, "stdout": out.read(), "stderr": err.read()}


def main():
    for line in sys.stdin:
        answer = _run(json.loads(line))
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
