"""Frame rate of a live session of `sanawm serve`, measured as a client sees it.

Starts the server in this process on a free loopback port with the given model, opens one
/v1/realtime session per `--steps` value, walks forward (`w`, key held: an action every
chunk) and times the frames as they arrive. Prints a table last. Example (2-core CPU):

    python scripts/bench_serve.py --steps 24 8 4 --frames 37

Frames come a chunk at a time. "first frame s" is from connecting to the first frame (the
whole first chunk); "fps" is the steady rate after it: frames of the later chunks over the time
from the first chunk's last frame to the last frame; "x real time" is that rate over the
model's video frame rate. Needs at least two chunks (--frames above 13 for the embedded model).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

from websockets.sync.client import connect

from sanawm.pipeline import WorldModel
from sanawm.serve.app import create_app
from sanawm.serve.config import ServeConfig
from sanawm.serve.server import listening_socket, load_off_main_thread, uvicorn_server


def run_session(host: str, steps: int | None, frames: int, first_chunk: int) -> dict:
    arrivals, started = [], time.perf_counter()
    with connect(f"ws://{host}/v1/realtime", max_size=2**26, open_timeout=30) as ws:
        ws.send(json.dumps({"type": "init", "action": "w-16", "num_frames": frames, "steps": steps}))
        ready = json.loads(ws.recv(timeout=600))
        assert ready["type"] == "ready", ready
        while True:
            message = json.loads(ws.recv(timeout=600))
            if message["type"] == "end":
                break
            if message["type"] == "error":
                raise RuntimeError(message["message"])
            ws.recv(timeout=60)  # the image
            arrivals.append(time.perf_counter())
            if len(arrivals) % 8 == 0:
                ws.send(json.dumps({"type": "event", "kind": "action", "payload": "w-16"}))
    later = len(arrivals) - first_chunk
    return {"steps": steps, "frames": len(arrivals), "first_frame_s": arrivals[0] - started,
            "fps": later / (arrivals[-1] - arrivals[first_chunk - 1]), "model_fps": ready["fps"]}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model folder (default: the embedded model)")
    p.add_argument("--steps", type=int, nargs="+", default=[0], help="sampling steps per session (0: the model's)")
    p.add_argument("--frames", type=int, default=37, help="frames per session (default 37)")
    p.add_argument("--device", help="torch device (default: cuda if available)")
    args = p.parse_args()

    model = load_off_main_thread(lambda: WorldModel.load(args.model, device=args.device))
    with tempfile.TemporaryDirectory() as data:
        config = ServeConfig(data_dir=Path(data))
        server = uvicorn_server(create_app(model, args.model or "embedded", config), config)
        sock = listening_socket("127.0.0.1", 0)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        host = f"127.0.0.1:{sock.getsockname()[1]}"
        first_chunk = model.vae.temporal_stride * model.settings.chunk_size + 1
        if args.frames <= first_chunk:
            p.error(f"--frames must be above {first_chunk} (one chunk) to measure the steady rate")
        rows = [run_session(host, steps or None, args.frames, first_chunk) for steps in args.steps]
        server.should_exit = True
        thread.join()
    default_steps = model.settings.steps
    print(f"\n{'steps':>6} {'frames':>7} {'first frame s':>14} {'fps':>7} {'x real time':>12}")
    for r in rows:
        steps = r["steps"] or default_steps
        print(f"{steps:>6} {r['frames']:>7} {r['first_frame_s']:>14.2f} {r['fps']:>7.2f} {r['fps'] / r['model_fps']:>12.3f}")


if __name__ == "__main__":
    main()
