"""A Hugging Face Hub mirror on loopback: the real counterpart of `edge-llm pull` in tests.

It implements what ``huggingface_hub`` calls, as the Hub answers it (read from huggingface_hub's
own source: ``HfApi.model_info``, ``get_hf_file_metadata``, ``http_get``):

- ``GET /api/models/OWNER/NAME[/revision/REV]?blobs=True``: id, commit ``sha`` and ``siblings``
  with ``rfilename``, ``size``, ``blobId`` and, for LFS files, ``lfs: {sha256, size, pointerSize}``.
- ``HEAD /OWNER/NAME/resolve/REV/FILE``: ``X-Repo-Commit`` and ``ETag`` (the git blob SHA-1) for a
  small file; for an LFS file a 302 to a CDN host (``localhost`` instead of ``127.0.0.1``, so the
  client does not follow it, as with the real CDN) carrying ``X-Linked-Etag`` (the SHA-256) and
  ``X-Linked-Size``.
- ``GET`` on either, with ``Range: bytes=N-`` answered by 206 and ``Content-Range``.
- Errors with ``X-Error-Code``: ``RepoNotFound`` (404, or 401 for a private repository without
  the right token), ``EntryNotFound``.

Faults a test can inject per file: ``cut_after`` (close the connection after N body bytes, once),
``stall_after`` (send N bytes, then hang until released), ``corrupt`` (serve other bytes than the
listed SHA-256). Every request is logged as (method, path, Range header, Authorization header).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LFS_MIN = 1024  # files at least this large are stored in LFS, as the Hub does for binaries


@dataclass
class RepoFile:
    data: bytes
    cut_after: int | None = None  # close the connection after this many bytes (first GET only)
    stall_after: int | None = None  # send this many bytes, then wait for Mirror.release
    corrupt: bool = False  # serve bytes that do not match the listed SHA-256
    missing: bool = False  # listed by the API, 404 on resolve

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def blob_id(self) -> str:
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()

    @property
    def lfs(self) -> bool:
        return len(self.data) >= LFS_MIN


@dataclass
class Repo:
    files: dict[str, RepoFile]
    commit: str = "0123456789abcdef0123456789abcdef01234567"
    token: str | None = None  # private: needs "Authorization: Bearer TOKEN"


@dataclass
class Mirror:
    repos: dict[str, Repo] = field(default_factory=dict)
    log: list[tuple[str, str, str | None, str | None]] = field(default_factory=list)
    stalled: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_repo(self, name: str, files: dict[str, bytes | RepoFile], **kw) -> Repo:
        repo = Repo(
            {k: v if isinstance(v, RepoFile) else RepoFile(v) for k, v in files.items()}, **kw
        )
        self.repos[name] = repo
        return repo

    def add_folder(self, name: str, folder: Path, **kw) -> Repo:
        files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
        return self.add_repo(name, files, **kw)

    def gets(self, filename: str) -> list[str | None]:
        """The Range headers of the GETs that fetched ``filename``'s bytes."""
        repo_file = next(
            f for r in self.repos.values() for n, f in r.files.items() if n == filename
        )
        keys = (f"/cdn/{repo_file.sha256}", f"/{filename}")
        return [rng for m, p, rng, _ in self.log if m == "GET" and p.endswith(keys)]


class _Handler(BaseHTTPRequestHandler):
    mirror: Mirror
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    # --- routing ------------------------------------------------------------------------------
    def _serve(self, head: bool) -> None:
        m = self.mirror
        path = self.path.split("?", 1)[0]
        m.log.append(
            (self.command, path, self.headers.get("Range"), self.headers.get("Authorization"))
        )
        if mo := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path):
            return self._model_info(mo[1])
        if mo := re.fullmatch(r"/cdn/([0-9a-f]{64})", path):
            for repo in m.repos.values():
                for f in repo.files.values():
                    if f.sha256 == mo[1]:
                        return self._bytes(f, repo, head)
            return self._error(404, "EntryNotFound")
        if mo := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            return self._resolve(mo[1], mo[3], head)
        self._error(404, None)

    def _repo(self, name: str) -> Repo | None:
        repo = self.mirror.repos.get(name)
        if repo is None:
            self._error(404, "RepoNotFound")
            return None
        if repo.token and self.headers.get("Authorization") != f"Bearer {repo.token}":
            self._error(401, "RepoNotFound")
            return None
        return repo

    def _model_info(self, name: str) -> None:
        repo = self._repo(name)
        if repo is None:
            return
        siblings = []
        for fname, f in repo.files.items():
            s = {"rfilename": fname, "size": len(f.data), "blobId": f.blob_id}
            if f.lfs:
                s["lfs"] = {"sha256": f.sha256, "size": len(f.data), "pointerSize": 134}
                s["blobId"] = hashlib.sha1(f.sha256.encode()).hexdigest()  # the pointer's
            siblings.append(s)
        body = json.dumps({"id": name, "sha": repo.commit, "siblings": siblings}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _resolve(self, name: str, fname: str, head: bool) -> None:
        repo = self._repo(name)
        if repo is None:
            return
        f = repo.files.get(fname)
        if f is None or f.missing:
            return self._error(404, "EntryNotFound", commit=repo.commit)
        if f.lfs:
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{self.mirror.port}/cdn/{f.sha256}")
            self.send_header("X-Repo-Commit", repo.commit)
            self.send_header("X-Linked-Etag", f'"{f.sha256}"')
            self.send_header("X-Linked-Size", str(len(f.data)))
            self.send_header("ETag", f'"{f.blob_id}"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._bytes(f, repo, head)

    # --- bodies -------------------------------------------------------------------------------
    def _bytes(self, f: RepoFile, repo: Repo, head: bool) -> None:
        data = f.data
        if f.corrupt:
            data = bytes(b ^ 0xFF for b in data[:16]) + data[16:]
        start = 0
        rng = self.headers.get("Range")
        if rng and (mo := re.fullmatch(r"bytes=(\d+)-(\d*)", rng)):
            start = int(mo[1])
        body = data[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("X-Repo-Commit", repo.commit)
        self.send_header("ETag", f'"{f.sha256 if f.lfs else f.blob_id}"')
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if head:
            return
        if f.cut_after is not None and start < f.cut_after:
            self.wfile.write(body[: f.cut_after - start])
            self.wfile.flush()
            f.cut_after = None  # once
            self.close_connection = True
            return
        if f.stall_after is not None and start < f.stall_after:
            self.wfile.write(body[: f.stall_after - start])
            self.wfile.flush()
            f.stall_after = None
            self.mirror.stalled.set()
            self.mirror.release.wait(60)
            self.close_connection = True
            return
        self.wfile.write(body)

    def _error(self, status: int, code: str | None, commit: str | None = None) -> None:
        body = json.dumps({"error": code or "not found"}).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def start(mirror: Mirror) -> ThreadingHTTPServer:
    """Serve ``mirror`` on a free loopback port in a daemon thread; returns the server."""
    handler = type("Handler", (_Handler,), {"mirror": mirror})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    mirror.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
