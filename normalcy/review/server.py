"""`normalcy serve`: review a run in the browser, label images, and see the ranking learn from the labels.

The server is meant for one machine (127.0.0.1) or a trusted team network, but it
still treats every request as hostile: each one needs the random access token and a
Host header naming this server, and a file is only served when its real path
(symlinks followed) is a file the run lists or lies inside the run folder or the
folders the run was made from. Image paths come from the database, never from a URL.

Labels live in a Store (SQLite next to the run unless --database says otherwise),
scoped to the run, so several runs can share one database; after each label the whole
run is re-ranked synchronously, which takes milliseconds for thousands of images, so
the page can simply reload the order.

    server.py      starting uvicorn, the URL, warnings (this file)
    server_app.py  the FastAPI app: page, static files, JSON API
    review.py      one run's items, ranking and servable files
    guard.py       Host check, token, body cap, security headers
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import webbrowser
from pathlib import Path
from typing import Callable

import uvicorn
from fastapi import FastAPI

from normalcy.errors import InputError
from normalcy.progress import plain
from normalcy.review.app import create_app
from normalcy.review.guard import WILDCARDS, bracket, is_loopback, new_token
from normalcy.review.ranking import DEFAULT_STRATEGY

__all__ = ["ReviewServer", "create_app", "listen", "new_token", "page_url", "serve"]

logger = logging.getLogger("normalcy")


def page_url(host: str, port: int, token: str) -> str:
    """The URL to open in a browser; a wildcard listen address is reached through 127.0.0.1."""
    shown = "127.0.0.1" if host in WILDCARDS else host
    return f"http://{bracket(shown)}:{port}/?token={token}"


def listen(host: str, port: int) -> socket.socket:
    """A bound socket for uvicorn: a taken port fails here with one clear line, and port 0 picks a free one.

    uvicorn is handed this very socket, so nothing can take the port between the check and the start.
    """
    sock: socket.socket | None = None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as err:
        if sock is not None:
            sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {err.strerror or err} (try another --port)") from None
    return sock


class ReviewServer:
    """uvicorn serving one app on a bound socket; ``announce(url)`` runs once it accepts connections."""

    def __init__(self, app: FastAPI, token: str, sock: socket.socket, host: str | None = None,
                 announce: Callable[[str], None] | None = None, open_browser: bool = False) -> None:
        self.app = app
        self.sock = sock
        bound_host, self.port = sock.getsockname()[:2]
        self.url = page_url(bound_host if host is None else host, self.port, token)
        self.announce = announce
        self.open_browser = open_browser
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self._done = threading.Event()

    def _when_started(self) -> None:
        while not self.server.started and not self._done.wait(0.02):
            pass
        if not self.server.started:
            return  # it never started (uvicorn said why)
        if self.announce is not None:
            self.announce(self.url)
        if self.open_browser:
            webbrowser.open(self.url)

    def run(self) -> None:
        """Serve until stop() (or Ctrl-C in the main thread)."""
        watcher = threading.Thread(target=self._when_started, daemon=True)
        watcher.start()
        try:
            self.server.run(sockets=[self.sock])
        finally:
            self._done.set()
            self.sock.close()

    def stop(self) -> None:
        self.server.should_exit = True


def exposure_warning(host: str) -> str | None:
    """The warning for a listen address beyond this machine, or None for loopback."""
    if is_loopback(host):
        return None
    return (f"listening on {host}, not only on this machine: anyone on the network who has the URL "
            "(with its token) can see the images and label them")


def serve(run_dir: Path, host: str = "127.0.0.1", port: int = 8765, database: str | None = None,
          strategy: str = DEFAULT_STRATEGY, token: str | None = None, open_browser: bool = False,
          announce: Callable[[str], None] | None = None) -> None:
    """Serve the review page until interrupted (Ctrl-C).

    The URL (with the token) is printed to stderr, or given to ``announce``, only once the
    server accepts connections, so whoever opens it right away is not refused.
    """
    token = token or new_token()
    app = create_app(Path(run_dir), token, database=database, strategy=strategy, host=host)
    try:
        sock = listen(host, port)
    except InputError:
        app.state.review.store.close()
        raise
    warning = exposure_warning(host)
    if warning:
        logger.warning(warning)
    if announce is None:
        labels = app.state.review.store.shown  # which database: labels given under another are not shown
        real = app.state.review.run_dir
        # a link (`latest`) is followed at each request: the run it leads to now, and that it may change
        now = "" if Path(os.path.abspath(run_dir)) == real else f" (now {plain(real)}, followed when re-pointed)"

        def announce(url: str) -> None:
            print(f"review {plain(run_dir)}{now} at {url}  (labels in {plain(labels)}; Ctrl-C stops)",
                  file=sys.stderr, flush=True)
    ReviewServer(app, token, sock, host=host, announce=announce, open_browser=open_browser).run()
