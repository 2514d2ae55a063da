"""End-to-end fixtures: the running local platform, an environment of the tests' own, git work trees."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from flows.settings import REPO_ROOT, Environment, Settings, _default_environments

E2E_ENV = Environment(name="e2e", namespace="aiship-e2e", replicas=2, node_port=16170)


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def platform(settings: Settings) -> Settings:
    """Fails (never skips) unless every part of the local platform runs; writes the blocks."""
    from flows import local_platform
    from flows.blocks import write_local_blocks

    rows = local_platform.status(settings)
    down = [r.part for r in rows if r.state not in ("running", "built", "ready")]
    if down:
        pytest.fail(f"parts not running: {', '.join(down)}; start them with `aiship local up`")
    write_local_blocks(settings)
    return settings


@pytest.fixture(scope="session")
def e2e_environment(platform) -> Environment:
    """The `e2e` environment (namespace aiship-e2e, NodePort 16170), added to the settings."""
    envs = {name: env.model_dump() for name, env in _default_environments().items()}
    envs["e2e"] = E2E_ENV.model_dump()
    old = os.environ.get("AISHIP_ENVIRONMENTS")
    os.environ["AISHIP_ENVIRONMENTS"] = json.dumps(envs)
    yield E2E_ENV
    if old is None:
        os.environ.pop("AISHIP_ENVIRONMENTS", None)
    else:
        os.environ["AISHIP_ENVIRONMENTS"] = old


@pytest.fixture(scope="session")
def kube(platform):
    """A Kubernetes API client from the KubernetesAccess block."""
    from flows.environments import kubernetes_client

    api_client = kubernetes_client(platform)
    yield api_client
    api_client.close()


class WorkTree:
    """A clone of this repository where tests commit variants of the app."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def git(self, *args: str) -> str:
        return subprocess.run(["git", *args], cwd=self.path, check=True, capture_output=True, text=True).stdout.strip()

    def commit_overlay(self, overlay: str, message: str) -> str:
        """Applies a known-bad overlay from tests/fixtures/bad/ and commits it; returns the SHA."""
        from tests.fixtures.apps import apply_overlay

        self.git("checkout", "--quiet", "--detach", "main")
        apply_overlay(self.path, overlay)
        return self.commit(message)

    def commit(self, message: str) -> str:
        self.git("add", "-A")
        self.git("-c", "user.name=aiship-e2e", "-c", "user.email=e2e@aiship.invalid", "commit", "--quiet", "-m", message)
        return self.git("rev-parse", "HEAD")


@pytest.fixture(scope="session")
def worktree(tmp_path_factory) -> WorkTree:
    """A clone of this repository's HEAD, set as the repository deliveries check out from."""
    path = tmp_path_factory.mktemp("app-repo") / "repo"
    subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(path)], check=True)
    subprocess.run(["git", "checkout", "--quiet", "-B", "main", "HEAD"], cwd=path, check=True)
    old = os.environ.get("AISHIP_GIT_REPOSITORY")
    os.environ["AISHIP_GIT_REPOSITORY"] = str(path)
    yield WorkTree(path)
    if old is None:
        os.environ.pop("AISHIP_GIT_REPOSITORY", None)
    else:
        os.environ["AISHIP_GIT_REPOSITORY"] = old
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def model_name() -> str:
    """A model name of this session's own, so runs never meet another session's versions."""
    return f"aiship-tests-e2e-{uuid.uuid4().hex[:8]}"
