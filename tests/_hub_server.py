"""A small stand-in for the Hugging Face Hub on 127.0.0.1, stdlib only.

It speaks the part of the Hub HTTP API that huggingface_hub's ``create_repo``, ``create_branch``,
``upload_folder`` / ``create_commit`` and ``snapshot_download`` / ``hf_hub_download`` use (as of
huggingface_hub 2.x), so the real client code runs end to end against it through ``HF_ENDPOINT``:

    POST /api/repos/create                               create a repo (409 with its url when it exists)
    POST /api/models/{repo}/branch/{branch}              create a branch (409 when it exists)
    POST /api/models/{repo}/preupload/{rev}              every file "regular" (base64 inline in the commit)
    POST /api/models/{repo}/commit/{rev}                 NDJSON commit: header, file (base64), deletedFile
    POST /api/validate-yaml                              accepts (used by create_commit without hf_xet)
    GET  /api/models/{repo}[/revision/{rev}]             model info: sha, private, siblings
    GET  /api/models/{repo}/tree/{rev}[/{path}]          tree listing (one page, no Link header)
    HEAD/GET /{repo}/resolve/{rev}/{path}                file with X-Repo-Commit, ETag, Content-Length
                                                         (no X-Xet-* headers: plain HTTP download)

Errors carry ``X-Error-Code`` (RepoNotFound, RevisionNotFound, EntryNotFound) as the Hub does, so
the client raises its usual exceptions. With ``token`` set, writes (and reads of private repos)
need ``Authorization: Bearer <token>``. Every request is logged in ``server.hub.requests`` as
``(method, path)`` so tests can assert what the client did (e.g. that no commit was sent).

    with HubServer(token="hf_test") as hub:       # hub.url -> "http://127.0.0.1:PORT"
        ...  # run clients with HF_ENDPOINT=hub.url
    hub.hub.commits_to("org/name")                 # commits received for a repo

Run it by hand: ``python tests/_hub_server.py [--port P] [--token T]``.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob: what the Hub reports as ``oid`` / ETag of a regular file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit sha
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit sha -> {path: content}
    log: list[dict] = field(default_factory=list)  # commits received: {"sha", "revision", "summary", "paths"}

    def resolve(self, rev: str) -> str | None:
        if rev in self.branches:
            return self.branches[rev]
        if COMMIT_RE.match(rev) and rev in self.commits:
            return rev
        return None

    def new_commit(self, parent: str | None, files: dict[str, bytes], summary: str) -> str:
        sha = hashlib.sha1(f"{parent}\n{summary}\n{time.time_ns()}\n{len(self.commits)}".encode()
                           + b"".join(git_blob_sha1(v).encode() + k.encode() for k, v in sorted(files.items()))
                           ).hexdigest()
        self.commits[sha] = files
        return sha


@dataclass
class HubState:
    token: str | None = None
    repos: dict[str, Repo] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def commits_to(self, repo_id: str) -> list[dict]:
        repo = self.repos.get(repo_id)
        return list(repo.log) if repo else []


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format, *args):  # quiet: the state keeps its own request log
        pass

    # -- plumbing -------------------------------------------------------------------------

    @property
    def hub(self) -> HubState:
        return self.server.hub

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, body: bytes = b"", content_type: str = "application/json",
              headers: dict | None = None, head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _json(self, status: int, obj, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers=headers)

    def _authorized(self) -> bool:
        return self.hub.token is None or self.headers.get("Authorization") == f"Bearer {self.hub.token}"

    def _need_auth(self) -> None:
        if self._authorized():
            return
        if self.headers.get("Authorization"):
            raise HubError(401, "Invalid credentials in Authorization header",
                           headers={"X-Error-Message": "Invalid credentials in Authorization header"})
        raise HubError(401, "You must be authenticated to access this API")

    def _repo(self, repo_id: str) -> Repo:
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.private and not self._authorized()):
            raise HubError(404 if repo is None else 401, "Repository not found", "RepoNotFound")
        return repo

    def _commit(self, repo: Repo, rev: str) -> str:
        sha = repo.resolve(rev)
        if sha is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return sha

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        with self.hub.lock:
            self.hub.requests.append((method, unquote(path)))
        body = self._body() if method == "POST" else b""
        try:
            with self.hub.lock:
                self._route(method, path, query, body)
        except HubError as e:
            headers = dict(e.headers)
            if e.code:
                headers["X-Error-Code"] = e.code
            payload = json.dumps({"error": e.message}).encode()
            self._send(e.status, payload, headers=headers, head=method == "HEAD")
        except (ValueError, KeyError) as e:
            self._send(400, json.dumps({"error": f"bad request: {e}"}).encode(), head=method == "HEAD")

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    # -- routes ---------------------------------------------------------------------------

    def _route(self, method: str, path: str, query: dict, body: bytes) -> None:
        if method == "POST" and path == "/api/repos/create":
            return self._create_repo(json.loads(body or b"{}"))
        if method == "POST" and path == "/api/validate-yaml":
            return self._json(200, {"errors": [], "warnings": []})
        if method == "POST" and (m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/branch/(.+)", path)):
            return self._create_branch(m[1], unquote(m[2]), json.loads(body or b"{}"))
        if method == "POST" and (m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/preupload/(.+)", path)):
            return self._preupload(m[1], unquote(m[2]), json.loads(body))
        if method == "POST" and (m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/commit/(.+)", path)):
            return self._commit_ndjson(m[1], unquote(m[2]), body)
        if method == "GET" and (m := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/(.+))?", path)):
            return self._model_info(m[1], unquote(m[2]) if m[2] else "main")
        if method == "GET" and (m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", path)):
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            return self._tree(m[1], unquote(m[2]), unquote(m[3] or ""), recursive)
        if method in ("GET", "HEAD") and (m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)):
            return self._resolve(m[1], unquote(m[2]), unquote(m[3]), head=method == "HEAD")
        raise HubError(404, f"not served by this test hub: {method} {path}")

    def _create_repo(self, payload: dict) -> None:
        self._need_auth()
        if payload.get("type", "model") not in (None, "model"):
            raise HubError(400, "this test hub serves model repos only")
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        if "/" not in repo_id:
            raise HubError(400, "repo id must be ORG/NAME")
        url = f"{self.server.url}/{repo_id}"
        if repo_id in self.hub.repos:
            return self._json(409, {"error": "You already created this model repo", "url": url})
        repo = Repo(repo_id, private=payload.get("visibility") == "private" or bool(payload.get("private")))
        repo.branches["main"] = repo.new_commit(None, {".gitattributes": GITATTRIBUTES}, "initial commit")
        self.hub.repos[repo_id] = repo
        self._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _create_branch(self, repo_id: str, branch: str, payload: dict) -> None:
        self._need_auth()
        repo = self._repo(repo_id)
        if branch in repo.branches:
            raise HubError(409, f"Reference already exists: refs/heads/{branch}")
        repo.branches[branch] = self._commit(repo, payload.get("startingPoint") or "main")
        self._json(200, {})

    def _preupload(self, repo_id: str, rev: str, payload: dict) -> None:
        self._need_auth()
        repo = self._repo(repo_id)
        files = repo.commits[self._commit(repo, rev)]
        out = []
        for f in payload["files"]:
            existing = files.get(f["path"])
            out.append({"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                        "oid": git_blob_sha1(existing) if existing is not None else None})
        self._json(200, {"files": out, "commitOid": repo.resolve(rev)})

    def _commit_ndjson(self, repo_id: str, rev: str, body: bytes) -> None:
        self._need_auth()
        repo = self._repo(repo_id)
        if rev not in repo.branches:
            raise HubError(404, f"Invalid rev id: {rev} (commits go to a branch)", "RevisionNotFound")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "commit payload must start with a header line")
        header = lines[0]["value"]
        parent = repo.branches[rev]
        if header.get("parentCommit") and header["parentCommit"] != parent:
            raise HubError(412, "parent commit is not the head of the branch")
        files = dict(repo.commits[parent])
        paths = []
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise HubError(400, f"unsupported encoding {value.get('encoding')!r}")
                files[value["path"]] = base64.b64decode(value["content"])
                paths.append(value["path"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {k: v for k, v in files.items() if not k.startswith(prefix)}
            else:  # lfsFile/xet: this hub said "regular" for everything, so there is no LFS store
                raise HubError(400, f"unsupported commit operation {key!r} (this test hub stores files inline)")
        sha = repo.new_commit(parent, files, header.get("summary", ""))
        repo.branches[rev] = sha
        repo.log.append({"sha": sha, "revision": rev, "summary": header.get("summary"), "paths": paths})
        self._json(200, {"commitUrl": f"{self.server.url}/{repo_id}/commit/{sha}", "commitOid": sha,
                         "pullRequestUrl": None, "success": True})

    def _model_info(self, repo_id: str, rev: str) -> None:
        repo = self._repo(repo_id)
        sha = self._commit(repo, rev)
        files = repo.commits[sha]
        self._json(200, {"id": repo_id, "modelId": repo_id, "sha": sha, "private": repo.private,
                         "disabled": False, "gated": False, "tags": [], "library_name": "sslzoo",
                         "lastModified": "2024-01-01T00:00:00.000Z", "createdAt": "2024-01-01T00:00:00.000Z",
                         "siblings": [{"rfilename": p, "size": len(v)} for p, v in sorted(files.items())]})

    def _tree(self, repo_id: str, rev: str, prefix: str, recursive: bool) -> None:
        repo = self._repo(repo_id)
        files = repo.commits[self._commit(repo, rev)]
        prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        entries, folders = [], set()
        for p, v in sorted(files.items()):
            if not p.startswith(prefix):
                continue
            rest = p[len(prefix):]
            if "/" in rest and not recursive:
                folders.add(prefix + rest.split("/")[0])
                continue
            if recursive:
                parts = rest.split("/")[:-1]
                folders.update(prefix + "/".join(parts[:i + 1]) for i in range(len(parts)))
            entries.append({"type": "file", "path": p, "size": len(v), "oid": git_blob_sha1(v)})
        entries += [{"type": "directory", "path": d, "size": 0, "oid": "0" * 40} for d in sorted(folders)]
        self._json(200, entries)

    def _resolve(self, repo_id: str, rev: str, path: str, head: bool) -> None:
        repo = self._repo(repo_id)
        sha = self._commit(repo, rev)
        data = repo.commits[sha].get(path)
        if data is None:
            raise HubError(404, "Entry not found", "EntryNotFound", headers={"X-Repo-Commit": sha})
        headers = {"X-Repo-Commit": sha, "ETag": f'"{git_blob_sha1(data)}"', "Accept-Ranges": "bytes"}
        status, body = 200, data
        rng = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if rng and not head:
            start = int(rng[1])
            end = int(rng[2]) if rng[2] else len(data) - 1
            if start >= len(data):
                raise HubError(416, "range not satisfiable", headers={"Content-Range": f"bytes */{len(data)}"})
            status, body = 206, data[start:end + 1]
            headers["Content-Range"] = f"bytes {start}-{start + len(body) - 1}/{len(data)}"
        self._send(status, body, content_type="application/octet-stream", headers=headers, head=head)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hub: HubState
    url: str


class HubServer:
    """Start a test Hub on 127.0.0.1 (a free port unless given) in a background thread."""

    def __init__(self, token: str | None = None, port: int = 0):
        self.hub = HubState(token=token)
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.hub = self.hub
        self.url = self._server.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="test-hub", daemon=True)

    def start(self) -> "HubServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Serve a test Hub on 127.0.0.1 until interrupted.")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--token", default=None, help="require this bearer token for writes")
    args = ap.parse_args()
    server = HubServer(token=args.token, port=args.port).start()
    print(f"HF_ENDPOINT={server.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
