"""A local stand-in for the Hugging Face Hub API: just enough of create-repo / preupload / commit to record an
upload made by `huggingface_hub`, with no network."""

from __future__ import annotations

import base64
import json
import threading

import yaml
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class HubStub:
    def __init__(self):
        self.repos: dict[str, dict] = {}
        self.files: dict[str, dict[str, bytes]] = {}
        self.auth_headers: list[str] = []
        self.unhandled: list[str] = []
        self.validated_cards: list[str] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _reply(self, status: int, payload: dict) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                stub.unhandled.append(f"GET {self.path}")
                self._reply(404, {"error": "not found"})

            def do_POST(self):
                stub.auth_headers.append(self.headers.get("Authorization", ""))
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                path = self.path.split("?")[0]
                if path == "/api/repos/create":
                    req = json.loads(body)
                    repo_id = f"{req.get('organization') or 'user'}/{req['name']}"
                    stub.repos[repo_id] = req
                    stub.files.setdefault(repo_id, {})
                    return self._reply(200, {"url": f"{stub.url}/{repo_id}", "name": repo_id})
                if path == "/api/validate-yaml":  # the Hub checks a model card's metadata before the commit
                    content = json.loads(body)["content"]
                    stub.validated_cards.append(content)
                    try:
                        meta = yaml.safe_load(content.split("---")[1]) if content.startswith("---") else {}
                        assert isinstance(meta, dict)
                    except Exception as err:  # noqa: BLE001
                        return self._reply(400, {"errors": [{"message": str(err)}]})
                    return self._reply(200, {"warnings": []})
                parts = path.strip("/").split("/")  # api models ns name (preupload|commit) revision
                if len(parts) == 6 and parts[:2] == ["api", "models"] and parts[4] == "preupload":
                    files = json.loads(body)["files"]
                    return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                        "shouldIgnore": False} for f in files]})
                if len(parts) == 6 and parts[:2] == ["api", "models"] and parts[4] == "commit":
                    repo_id = f"{parts[2]}/{parts[3]}"
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        if item.get("key") == "file":
                            value = item["value"]
                            stub.files[repo_id][value["path"]] = base64.b64decode(value["content"])
                    return self._reply(200, {"commitUrl": f"{stub.url}/{repo_id}/commit/" + "0" * 40, "commitOid": "0" * 40})
                stub.unhandled.append(f"POST {self.path}")
                return self._reply(404, {"error": "not found"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
