"""A local stand-in for download servers and the Hugging Face Hub, on 127.0.0.1 (``HF_ENDPOINT``).

``files`` ({url path: bytes}) are served as they are. Hub-style ``/{repo}/resolve/{revision}/{file}``
paths answer HEAD with the headers huggingface_hub reads (the revision's commit, ETag = the SHA-256 of
the body or the one in ``etags``, size); a missing one answers 404 with the Hub's ``X-Error-Code``
(RepoNotFound, RevisionNotFound, EntryNotFound), from which huggingface_hub picks its error.

Uploads take the Hub's routes that huggingface_hub calls when Xet is off (``HF_HUB_DISABLE_XET=1``):
``POST /api/repos/create``, ``/api/validate-yaml`` (a model card's metadata), ``/api/models/{repo}/branch/
{revision}``, ``/api/models/{repo}/preupload/{revision}`` (every file in the regular upload mode, no
LFS) and ``/api/models/{repo}/commit/{revision}`` (NDJSON: a header line, then one base64 file per
line). A commit's files are then served under the revision, with a new commit id.
"""
from __future__ import annotations

import base64
import hashlib
import http.server
import json
import re
import threading
from urllib.parse import unquote, urlsplit

RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<action>preupload|commit|branch)/(?P<rev>[^/]+)$")


class HubServer:
    """A thread serving ``files`` and hub repositories (see the module's docstring). ``truncate``:
    paths whose body is cut short after the headers promised all of it. ``requests``: (method, path)
    of every request; ``commits``: each commit's repo, revision, summary, files and Authorization."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.etags: dict[str, str] = {}
        self.truncate: set[str] = set()
        self.requests: list[tuple[str, str]] = []
        self.repos: dict[str, dict[str, str]] = {}  # repo id -> {branch: commit id}
        self.private: dict[str, bool] = {}
        self.commits: list[dict] = []
        self.lock = threading.Lock()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def repo_file(self, repo: str, file: str, revision: str = "main") -> bytes | None:
        return self.files.get(f"/{repo}/resolve/{revision}/{file}")

    def set_repo_file(self, repo: str, file: str, body: bytes, revision: str = "main") -> None:
        """Replace a committed file's bytes (a damaged upload, say), keeping the commit."""
        self.files[f"/{repo}/resolve/{revision}/{file}"] = body

    # -------------------------------------------------------------------------------- the hub's side

    def missing_code(self, path: str) -> str | None:
        """The Hub's X-Error-Code for a path with nothing behind it."""
        m = RESOLVE.match(path)
        if not m:
            return None
        branches = self.repos.get(m["repo"])
        known_files = any(p.startswith(f"/{m['repo']}/resolve/") for p in self.files)
        if branches is None and not known_files:
            return "RepoNotFound"
        if branches is not None and unquote(m["rev"]) not in branches:
            return "RevisionNotFound"
        return "EntryNotFound"

    def commit_id(self, path: str) -> str:
        m = RESOLVE.match(path)
        return self.repos.get(m["repo"], {}).get(unquote(m["rev"]), "a" * 40) if m else "a" * 40

    def create_repo(self, payload: dict) -> tuple[int, dict]:
        repo = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        url = f"{self.url}/{repo}"
        if repo in self.repos:
            return 409, {"error": "You already created this model repo", "url": url}
        self.repos[repo] = {"main": hashlib.sha1(f"{repo}@init".encode()).hexdigest()}
        self.private[repo] = payload.get("visibility") == "private"
        return 200, {"url": url, "name": repo}

    def commit(self, repo: str, revision: str, body: bytes, auth: str | None) -> dict:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = next(item["value"] for item in lines if item["key"] == "header")
        added = {}
        for item in lines:
            if item["key"] == "file":
                assert item["value"]["encoding"] == "base64"
                added[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            elif item["key"] != "header":
                raise ValueError(f"the stand-in hub takes regular files only, got {item['key']}")
        for path, content in added.items():
            self.files[f"/{repo}/resolve/{revision}/{path}"] = content
        oid = hashlib.sha1(f"{repo}@{revision}#{len(self.commits)}".encode()).hexdigest()
        self.repos[repo][revision] = oid
        self.commits.append(dict(repo=repo, revision=revision, summary=header["summary"], files=sorted(added),
                                 authorization=auth))
        return {"commitUrl": f"{self.url}/{repo}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None}

    def create_branch(self, repo: str, branch: str) -> tuple[int, dict]:
        if branch in self.repos[repo]:
            return 409, {"error": f"Reference already exists: refs/heads/{branch}"}
        prefix = f"/{repo}/resolve/main/"
        for path, body in list(self.files.items()):
            if path.startswith(prefix):
                self.files[f"/{repo}/resolve/{branch}/{path[len(prefix):]}"] = body
        self.repos[repo][branch] = self.repos[repo]["main"]
        return 200, {}

    def api(self, path: str, body: bytes, auth: str | None) -> tuple[int, dict, str | None]:
        """(status, JSON answer, X-Error-Code) of a POST."""
        if path == "/api/repos/create":
            return (*self.create_repo(json.loads(body)), None)
        if path == "/api/validate-yaml":
            return 200, {"errors": [], "warnings": []}, None
        m = API.match(path)
        if not m:
            return 404, {"error": f"no route {path}"}, None
        repo, revision = m["repo"], unquote(m["rev"])
        if repo not in self.repos:
            return 404, {"error": "Repository not found"}, "RepoNotFound"
        if m["action"] == "branch":
            return (*self.create_branch(repo, revision), None)
        if revision not in self.repos[repo]:
            return 404, {"error": f"Invalid rev id: {revision}"}, "RevisionNotFound"
        if m["action"] == "preupload":
            files = json.loads(body)["files"]
            return 200, {"files": [dict(path=f["path"], uploadMode="regular", shouldIgnore=False) for f in files]}, None
        return 200, self.commit(repo, revision, body, auth), None


def _handler(server: HubServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def _head(self) -> bytes | None:
            path = urlsplit(self.path).path
            server.requests.append((self.command, path))
            body = server.files.get(path)
            if body is None:
                code = server.missing_code(path)
                self.send_response(404)
                if code:
                    self.send_header("X-Error-Code", code)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Repo-Commit", server.commit_id(path))
            self.send_header("ETag", f'"{server.etags.get(path, hashlib.sha256(body).hexdigest())}"')
            self.end_headers()
            return body

        def do_HEAD(self) -> None:
            self._head()

        def do_GET(self) -> None:
            body = self._head()
            if body is not None:
                path = urlsplit(self.path).path
                self.wfile.write(body[: len(body) // 2] if path in server.truncate else body)

        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            server.requests.append(("POST", path))
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with server.lock:
                status, answer, code = server.api(path, body, self.headers.get("Authorization"))
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if code:
                self.send_header("X-Error-Code", code)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    return Handler
