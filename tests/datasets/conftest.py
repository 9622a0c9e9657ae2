"""Fixtures for the dataset tests: fake scene files and a loopback HTTP server."""

from __future__ import annotations

import http.server
import importlib.util
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

_FAKES = Path(__file__).resolve().parents[1] / "data" / "make_fake_scenes.py"


def _load_fake_module():
    spec = importlib.util.spec_from_file_location("make_fake_scenes", _FAKES)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def fakes():
    """The fake-scene generator module (tests/data/make_fake_scenes.py)."""
    return _load_fake_module()


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder; ``/cut/<file>`` announces the full size but sends half and hangs up."""

    def do_GET(self) -> None:
        if self.path.startswith("/cut/"):
            body = (Path(self.directory) / self.path[len("/cut/") :]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args) -> None:  # keep the test output clean
        pass


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A ThreadingHTTPServer on 127.0.0.1 (random port): yields (base URL, served folder)."""
    served = tmp_path / "served"
    served.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(_Handler, directory=str(served))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
