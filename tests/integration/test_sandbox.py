"""Integration: an app's tests run in its own test image on the real dockerd, sandboxed.

The known-bad fixture `tests/fixtures/apps/reach` tries to reach the state folder, the Docker
socket, Prefect's blocks, the cluster API and the network, asks for root and writes outside /tmp.
Each of its tests passes only when its attempt fails. The same probes, run on this host, do reach
those things: the sandbox is what stops them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from flows.app_config import read_app_config
from flows.app_tests import build_test_image_with, run_app_tests
from flows.errors import AppTestError, ImageBuildError
from flows.image import context_members
from flows.sandbox import SANDBOX_LABEL, SandboxLimits, run_sandboxed
from flows.source import SourceTree
from flows.wheels import prepare_wheels

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "apps" / "reach"
PROBE_NAMES = ("cluster_api", "docker_socket", "network", "prefect_blocks", "secrets_in_environment", "state_folder")


def targets(settings) -> dict:
    return {"state_dir": str(settings.state_dir), "docker_socket": "/var/run/docker.sock",
            "prefect_api": os.environ["PREFECT_API_URL"], "kube_api_port": settings.kube_api_port,
            "outside_host": "pypi.org"}


@pytest.fixture(scope="module")
def reach(tmp_path_factory, settings, docker_client):
    """The fixture app copied out, told where the host's secrets are, and its test image built."""
    src = tmp_path_factory.mktemp("reach") / "repo"
    shutil.copytree(FIXTURE, src)
    (src / "tests" / "targets.json").write_text(json.dumps(targets(settings)))
    config = read_app_config(src)
    source = SourceTree(src, "5a" * 20, datetime.now(timezone.utc), str(FIXTURE))
    wheels = prepare_wheels([src / r for r in config.build.requirements], settings.cache_dir)
    image = build_test_image_with(docker_client, source, config, wheels.path, settings.base_image)
    yield source, config, image
    docker_client.images.remove(image.tag, noprune=True)


def load_probes(src: Path):
    spec = importlib.util.spec_from_file_location("reach_probes", src / "tests" / "probes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_attempt_of_the_fixture_fails_inside_the_sandbox(reach, docker_client):
    _, config, image = reach
    result = run_app_tests(docker_client, image, config)
    expected = {f"tests.test_reach::test_cannot_reach[{name}]" for name in PROBE_NAMES} | {
        "tests.test_reach::test_not_root_although_the_image_asks_for_it",
        "tests.test_reach::test_root_file_system_is_read_only_and_tmp_is_writable",
        "tests.test_reach::test_memory_is_limited",
    }
    assert set(result.passed_names) == expected and result.passed == len(expected)
    assert not docker_client.containers.list(all=True, filters={"label": SANDBOX_LABEL})


def test_the_same_probes_reach_those_things_on_the_host(reach):
    source, _, _ = reach
    probes = load_probes(source.path)
    reached = {name: probe() for name, probe in probes.PROBES.items()}
    # Outside the sandbox each probe succeeds, so a probe that passes inside proves the sandbox held.
    assert all(reached[name] for name in PROBE_NAMES), reached


def test_a_test_that_reaches_something_fails_the_run_and_is_named(reach, docker_client):
    source, config, image = reach
    leaky = config.model_copy(update={"tests": config.tests.model_copy(update={"command": [
        "python", "-c", "import os, sys; sys.path.insert(0, 'tests');"
        " from xml.sax.saxutils import quoteattr;"
        " open('/aiship-report/junit.xml', 'w').write('<testsuite><testcase classname=\"t\" name=\"reach\">"
        "<failure message=\"reached\"/></testcase></testsuite>'); sys.exit(1) # {junit}"]})})
    with pytest.raises(AppTestError, match=r"1 app test\(s\) failed at 5a5a5a5a5a5a: t::reach; fix them"):
        run_app_tests(docker_client, image, leaky)


def test_a_run_over_its_time_limit_is_stopped_and_removed(reach, docker_client):
    _, _, image = reach
    run = run_sandboxed(docker_client, image.image_id, ["sleep", "60"], SandboxLimits(timeout_seconds=2))
    shutil.rmtree(run.report_dir)
    assert run.timed_out and run.exit_code is None and run.seconds < 30 and run.user == "65534:65534"
    assert not docker_client.containers.list(all=True, filters={"label": SANDBOX_LABEL})


def test_a_link_out_of_the_repository_is_refused_by_name(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(FIXTURE, repo)
    (repo / "tests" / "credentials").symlink_to("/etc/passwd")
    (tmp_path / "wheels").mkdir()
    with pytest.raises(ImageBuildError, match=r"tests/credentials in the build context .* is a link to /etc/passwd, "
                                              r"outside the repository"):
        context_members(repo, tmp_path / "wheels")
