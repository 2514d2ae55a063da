"""`aiship init`: what it writes is what a delivery accepts; run twice it changes nothing; it never overwrites."""

from __future__ import annotations

import pytest

from flows.app_config import read_app_config
from flows.errors import ConfigurationError
from flows.image import has_stage
from flows.init import InitAnswers, init_repository

ANSWERS = InitAnswers(name="regressor", wsgi="regressor.app:application", port=9000, code_dir="regressor",
                      tests_dir="tests", requirements="requirements.txt", test_requirements="requirements-test.txt",
                      model_types=("sklearn.linear_model._ridge.Ridge", "numpy.ndarray"), ready_path="/ready")


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "requirements.txt").write_text("gunicorn==27.0.1\n")
    (tmp_path / "requirements-test.txt").write_text("pytest==9.2.0\n")
    return tmp_path


def test_init_writes_a_valid_config_and_a_dockerfile_in_aiships_layer_order(repo):
    written = init_repository(repo, ANSWERS)
    assert [(w.path.name, w.action) for w in written] == [("aiship.toml", "written"), ("Dockerfile", "written")]
    config = read_app_config(repo)
    assert (config.name, config.serve.port, config.serve.ready_path) == ("regressor", 9000, "/ready")
    assert config.model.types == ["numpy.ndarray", "sklearn.linear_model._ridge.Ridge"]
    assert config.build.requirements == ["requirements.txt", "requirements-test.txt"]
    dockerfile = (repo / "Dockerfile").read_text()
    assert has_stage(dockerfile, "code") and has_stage(dockerfile, "test") and "@" not in dockerfile
    assert '"regressor.app:application"' in dockerfile and "EXPOSE 9000" in dockerfile and "${BASE_IMAGE}" in dockerfile
    assert dockerfile.index("AS deps") < dockerfile.index("AS code") < dockerfile.index("AS test")


def test_init_twice_changes_nothing(repo):
    init_repository(repo, ANSWERS)
    before = {p.name: p.read_text() for p in repo.iterdir()}
    assert {w.action for w in init_repository(repo, ANSWERS)} == {"unchanged"}
    assert {p.name: p.read_text() for p in repo.iterdir()} == before


def test_init_never_overwrites_without_force(repo):
    (repo / "aiship.toml").write_text("# the team's own\n")
    with pytest.raises(ConfigurationError, match=r"aiship.toml exists and differs .*aiship init --force"):
        init_repository(repo, ANSWERS)
    assert (repo / "aiship.toml").read_text() == "# the team's own\n"
    assert init_repository(repo, ANSWERS, force=True)[0].action == "written"


def test_the_apps_own_dockerfile_is_kept(repo):
    (repo / "Dockerfile").write_text("FROM x AS code\nFROM x AS test\n")
    written = init_repository(repo, ANSWERS)
    assert written[1].action == "kept" and (repo / "Dockerfile").read_text().startswith("FROM x AS code")


def test_missing_requirements_are_named(tmp_path):
    with pytest.raises(ConfigurationError, match=r"requirements file .*requirements.txt not found"):
        init_repository(tmp_path, ANSWERS)
