"""`sanawm serve` on the command line: bad options exit 2 with one line, and the real
command starts, serves the page and stops on Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from sanawm.cli import main

pytest.importorskip("uvicorn")
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--model", "/no/such/folder"], "no such model folder"),
        (["--token", "short"], "--token must be 8 to 256"),
        (["--token", "has spaces in it"], "--token must be"),
        (["--port", "70000"], "--port must be"),
        (["--max-sessions", "0"], "--max-sessions must be"),
    ],
)
def test_bad_options_exit_2_with_one_line(tmp_path, capsys, argv, expected):
    assert main(["serve", "--data", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1, err


def test_a_taken_port_exits_2_before_the_model_loads(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["serve", "--data", str(tmp_path), "--port", str(port)]) == 2
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err


def test_serve_starts_answers_and_stops_on_ctrl_c(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sanawm", "serve", "--port", "0", "--data", str(tmp_path / "data")],
        stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        line = proc.stderr.readline()  # "sanawm serve: model embedded (128x128); open http://127.0.0.1:PORT/"
        match = re.search(r"open (http://127\.0\.0\.1:\d+/)", line)
        assert match, line
        base = match.group(1)
        deadline = time.monotonic() + 60
        while True:
            try:
                health = json.load(urllib.request.urlopen(base + "healthz", timeout=5))
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        assert health["status"] == "ok" and health["max_sessions"] == 2
        models = json.load(urllib.request.urlopen(base + "v1/models", timeout=5))
        assert models["data"][0]["id"] == "embedded" and models["data"][0]["size"] == [128, 128]
        assert b"<canvas" in urllib.request.urlopen(base, timeout=5).read()
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    # uvicorn shuts down (sessions closed, job runner stopped) and re-raises the signal; the
    # CLI then exits like every sub-command on Ctrl-C.
    assert code == 130
    assert "interrupted" in proc.stderr.read()


def test_ctrl_c_is_reported_even_when_uvicorns_re_raise_is_lost(monkeypatch):
    # Under asyncio's runner uvicorn's re-raise of SIGINT can cancel a task that has already
    # finished, and `Server.run` then returns normally: the server still reports the Ctrl-C.
    import uvicorn

    from sanawm.serve.config import ServeConfig
    from sanawm.serve.server import uvicorn_server

    def stopped_by_ctrl_c(self, sockets=None):
        self.handle_exit(signal.SIGINT, None)  # what uvicorn's signal handler does
        assert self.should_exit  # uvicorn's own shutdown flag is still set

    monkeypatch.setattr(uvicorn.Server, "run", stopped_by_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        uvicorn_server(lambda *a: None, ServeConfig(data_dir=Path("."))).run(sockets=[])

    def stopped_by_sigterm(self, sockets=None):
        self.handle_exit(signal.SIGTERM, None)

    monkeypatch.setattr(uvicorn.Server, "run", stopped_by_sigterm)
    uvicorn_server(lambda *a: None, ServeConfig(data_dir=Path("."))).run(sockets=[])  # no Ctrl-C: returns
