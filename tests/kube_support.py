"""What the tests that roll out on the real cluster share: a client, tiny server images, releases, settling.

The images are built from the local base image (nothing pulled) and pushed to the local registry
by digest; each test process tags them with its own RUN.
"""

from __future__ import annotations

import hashlib
import io
import random
import tarfile
import time
import uuid

import httpx
import pytest

from flows import environments as envs
from flows.release import ModelId, PinnedRelease, Release
from flows.settings import Environment, Settings

RUN = uuid.uuid4().hex[:8]
REPO = "aiship-rollout-test"

SERVER = r'''
import json, os, signal, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/version":
            body, code = json.dumps({"mark": os.environ["MARK"], "env": os.environ.get("AISHIP_APP_ENVIRONMENT")}), 200
        elif self.path == "/readyz" and os.environ.get("NOT_READY"):
            body, code = "not ready", 503
        elif self.path in ("/readyz", "/healthz"):
            body, code = "ok", 200
        else:
            body, code = "not found", 404
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

if os.environ.get("CRASH_AFTER"):  # ready first, then gone: a crash loop only a cluster sees
    import threading
    threading.Timer(float(os.environ["CRASH_AFTER"]), lambda: os._exit(1)).start()
server = ThreadingHTTPServer(("0.0.0.0", 8080), Handler)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
server.serve_forever()
'''

DOCKERFILE = """FROM aiship/base:bookworm-py311
ARG MARK
ENV MARK=$MARK{extra}
COPY server.py /srv/server.py
USER {user}
EXPOSE 8080
CMD ["python3", "/srv/server.py"]
"""



def cluster_client(settings: Settings):
    """The cluster through the KubernetesAccess block, or the local kubeconfig until that block exists."""
    from kubernetes import client

    kubeconfig = settings.state_dir / "kubernetes" / "kubeconfig"
    try:
        api = envs.kubernetes_client(settings)
    except Exception:
        if not kubeconfig.exists():
            pytest.fail(f"no KubernetesAccess block and no {kubeconfig}; start the cluster: `aiship local up kubernetes`")
        api = envs.kubernetes_client(settings, kubeconfig)
    try:
        client.VersionApi(api).get_code()
    except Exception as exc:
        pytest.fail(f"the Kubernetes API does not answer ({exc}); start it: `aiship local up kubernetes`")
    return api


def short_deadlines() -> Settings:
    """Settings with short deadlines, which keep failing rollouts quick; the logic is the one staging uses.
    A module makes it its `settings` fixture: `settings = pytest.fixture(scope="module")(short_deadlines)`."""
    return Settings(rollout_progress_deadline_seconds=40, rollout_min_ready_seconds=1)


def module_cluster(settings):
    """The cluster for a module's tests, closed at its end: `api_client = pytest.fixture(scope="module")(module_cluster)`."""
    api = cluster_client(settings)
    yield api
    api.close()


def build_and_push(docker_client, registry: dict, mark: str, user: str = "65534", env: dict[str, str] | None = None) -> str:
    """Builds the tiny server image with MARK=`mark` (and `env`) running as `user`, pushes it, returns `repo@sha256:…`."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, text in (("Dockerfile", DOCKERFILE.format(user=user, extra="".join(f"\nENV {k}={v}" for k, v in (env or {}).items()))), ("server.py", SERVER)):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    host = registry["registry_url"]
    repo = f"{host}/{REPO}"
    image, _ = docker_client.images.build(fileobj=context, custom_context=True, tag=f"{repo}:{RUN}-{mark}",
                                          buildargs={"MARK": mark}, rm=True, labels={"io.aiship.test": RUN})
    auth = {"username": registry["username"], "password": registry["password"]}
    digest = None
    for line in docker_client.api.push(repo, tag=f"{RUN}-{mark}", auth_config=auth, stream=True, decode=True):
        if "error" in line:
            pytest.fail(f"push of {repo}:{RUN}-{mark} failed: {line['error']}")
        digest = (line.get("aux") or {}).get("Digest", digest)
    assert digest, "the push stream reported no digest"
    return f"{repo}@{digest}"


def free_node_port(api_client) -> int:
    from kubernetes import client

    used = {p.node_port for s in client.CoreV1Api(api_client).list_service_for_all_namespaces().items
            for p in (s.spec.ports or []) if p.node_port}
    return random.choice(sorted(set(range(16100, 16180)) - used))


def environment(api_client, namespaces: list[str], suffix: str) -> Environment:
    """An environment of two replicas in a namespace of its own (appended to `namespaces`, for deletion)."""
    ns = f"aiship-it-{RUN}-{suffix}"
    namespaces.append(ns)
    return Environment(name=f"it-{suffix}", namespace=ns, replicas=2, node_port=free_node_port(api_client))


def release(ref: str, version: int) -> PinnedRelease:
    git_sha = hashlib.sha1(ref.encode()).hexdigest()  # the same image, the same commit: a re-delivery is identical
    model = ModelId(name="iris", version=version, sha256="e" * 64)
    return Release(app=Settings().app_name, git_sha=git_sha, model=model).pinned(ref)


def version_at(env: Environment) -> dict:
    return httpx.get(f"http://127.0.0.1:{env.node_port}/version", timeout=5).json()




def wait_until_settled(api_client, namespace: str, timeout: float = 90.0) -> None:
    """Returns once no pod in `namespace` is terminating.

    A rollout is complete when the Service routes to the new pods only, but an old pod keeps
    answering for its preStop seconds while kube-proxy catches up (that is what the preStop is
    for). A test that asserts every answer comes from the new version starts after this.
    """
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    deadline = time.monotonic() + timeout
    while True:
        terminating = [p.metadata.name for p in core.list_namespaced_pod(namespace).items if p.metadata.deletion_timestamp]
        if not terminating:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"pods still terminating in {namespace} after {timeout:.0f} s: {terminating}")
        time.sleep(0.5)
