"""A local Prefect API server that dies with the process that started it.

Without ``PREFECT_API_URL``, Prefect 3 starts a temporary API server on first use
(``prefect.server.api.server.SubprocessASGIServer``: ``python -m uvicorn ... create_app`` as a
plain ``subprocess.Popen``) and stops it from an ``atexit`` hook. A SIGKILLed parent runs no
``atexit`` hook, and Prefect gives that child no parent-death guard, so every killed
``cnnlstm run`` left a server process behind, holding its port and the SQLite database.

`GuardedServer` starts the same app (`create_app`, with the ephemeral-server settings Prefect
uses) in a child that ends itself when its parent is gone:

- on Linux, ``prctl(PR_SET_PDEATHSIG, SIGTERM)`` set in the child (the kernel signals it the
  moment the parent dies); the child checks that the parent did not die before that call;
- everywhere, a watchdog thread that polls ``getppid()`` every second (an orphan is re-parented);

either way uvicorn shuts down gracefully on SIGTERM, and the watchdog exits the process hard if
that takes more than 10 s. The parent binds the listening socket itself (port 0, 127.0.0.1) and
passes it to the child, so there is no port race. ``cnnlstm run`` points ``PREFECT_API_URL`` at
it before Prefect is imported, so Prefect never starts its own.

Run as ``python -m flows.api_server --parent PID --fd FD`` (by `GuardedServer` only).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time

# what SubprocessASGIServer sets for its child: no UI, the ephemeral set of services
EPHEMERAL_ENV = {
    "PREFECT_UI_ENABLED": "0",
    "PREFECT__SERVER_EPHEMERAL": "1",
    "PREFECT__SERVER_FINAL": "1",
}


class GuardedServer:
    """Start with `start()`; `api_url` is then the value for ``PREFECT_API_URL``."""

    def __init__(self, timeout: float | None = None):
        self.timeout = timeout or float(
            # generous: the first start on a fresh install migrates the database and compiles
            # Prefect's modules, which took over 120 s on a busy 2-core machine
            os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "600")
        )
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> GuardedServer:
        import httpx

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        fd = sock.fileno()
        try:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "flows.api_server",
                    "--parent",
                    str(os.getpid()),
                    "--fd",
                    str(fd),
                ],
                pass_fds=(fd,),
                env=os.environ | EPHEMERAL_ENV,
                stdin=subprocess.DEVNULL,
            )
        finally:
            sock.close()  # the child holds its own copy
        t0 = time.monotonic()
        deadline, told = t0 + self.timeout, False
        with httpx.Client(timeout=5) as client:
            while True:
                if not told and time.monotonic() - t0 > 20:
                    told = True
                    print(
                        "waiting for the local Prefect API server to start (the first start "
                        f"sets up its database; up to {self.timeout:.0f} s) ...",
                        file=sys.stderr,
                        flush=True,
                    )
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"the Prefect API server exited with status {self.proc.returncode} "
                        "before answering (its errors are above)"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.api_url}/health").status_code == 200:
                        return self
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"the Prefect API server did not answer within {self.timeout:.0f} s "
                        "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)"
                    )
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> GuardedServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------
# the child


def _die_with(parent: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the guard was in place
        os._exit(0)

    def watchdog() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful shutdown
        time.sleep(10)
        os._exit(1)

    threading.Thread(target=watchdog, name="parent-watchdog", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="flows.api_server")
    ap.add_argument("--parent", type=int, required=True)
    ap.add_argument("--fd", type=int, required=True)
    args = ap.parse_args(argv)
    _die_with(args.parent)
    sock = socket.socket(fileno=args.fd)

    import uvicorn

    config = uvicorn.Config(
        "prefect.server.api.server:create_app",
        factory=True,
        log_level="error",
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
