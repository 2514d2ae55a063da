"""aiship.toml: the sample's own file is valid, and each kind of mistake gets its own message."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.app_config import AppConfigError, line_of, parse_app_config, read_app_config, require_name

REPO = Path(__file__).resolve().parents[2]

MINIMAL = """\
[app]
name = "iris"

[model]
types = ["numpy.ndarray"]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(AppConfigError) as caught:
        parse_app_config(text, "repo/aiship.toml")
    assert str(caught.value).startswith("repo/aiship.toml is not a valid aiship configuration")
    assert "commit it" in str(caught.value)
    return caught.value.problems


def test_the_sample_apps_file_is_valid_and_agrees_with_its_loader():
    from app.model import ALLOWED_TYPES

    config = read_app_config(REPO)
    assert config.name == "aiship-app" and config.serve.port == 8080 and config.tests.stage == "test"
    # The app's loader and its aiship.toml name the same types: publish refuses what the app would.
    assert set(config.model.types) == ALLOWED_TYPES


def test_defaults_fill_what_a_minimal_file_leaves_out():
    config = parse_app_config(MINIMAL)
    assert config.build.dockerfile == "Dockerfile" and config.build.code_stage == "code"
    assert config.serve.ready_path == "/readyz" and config.serve.resources.memory_limit == "768Mi"
    assert "{junit}" in " ".join(config.tests.command) and config.golden.rule == "manifest"


@pytest.mark.parametrize("text, expected", [
    # 1. a TOML syntax error, with TOML's own position
    ("[app\nname = 'x'\n", r"not valid TOML: .*line 1"),
    # 2. a misspelt key, with its line
    (MINIMAL + "\n[serve]\nprot = 8080\n", r"^\[serve\] prot \(line 8\): unknown key"),
    # 3. a required key left out
    ("[app]\nname = 'iris'\n", r"^model: required but missing; add it"),
    # 4. a name that cannot be a Kubernetes or image name
    (MINIMAL.replace('"iris"', '"Iris_App"'), r"^\[app\] name \(line 2\): lower-case letters, digits and '-'"),
    # 5. a port out of range
    (MINIMAL + "[serve]\nport = 70000\n", r"^\[serve\] port \(line 7\): .*less than or equal to 65535, got 70000"),
    # 6. a port of the wrong type
    (MINIMAL + "[serve]\nport = 'eighty'\n", r"^\[serve\] port \(line 7\): .*valid integer.*got 'eighty'"),
    # 7. a probe path that is not a path
    (MINIMAL + "[serve]\nready_path = 'readyz'\n", r"^\[serve\] ready_path \(line 7\): an HTTP path starting with '/'"),
    # 8. a Dockerfile outside the repository
    (MINIMAL + "[build]\ndockerfile = '../other/Dockerfile'\n", r"^\[build\] dockerfile \(line 7\): a path inside the repository"),
    # 9. a relative model folder
    (MINIMAL.replace('[model]\n', '[model]\ndir = "opt/model"\n'), r"^model \(line 4\): .*dir must be an absolute folder"),
    # 10. no model types
    (MINIMAL.replace('["numpy.ndarray"]', "[]"), r"^\[model\] types \(line 5\): .*at least 1 item"),
    # 11. a type that is not a dotted name
    (MINIMAL.replace('"numpy.ndarray"', '"ndarray; rm -rf /"'), r"^\[model\] types\[0\] \(line 5\): a dotted Python type name"),
    # 12. a test command that writes no report aiship can read
    (MINIMAL + "[tests]\ncommand = ['pytest']\n", r"^tests \(line 6\): .*must pass \{junit\}"),
    # 13. a time limit beyond what aiship allows
    (MINIMAL + "[tests]\ntimeout_seconds = 86400\n", r"^\[tests\] timeout_seconds \(line 7\): .*less than or equal to 3600"),
    # 14. a memory size in the wrong notation
    (MINIMAL + "[tests]\nmemory = '1GB'\n", r"^\[tests\] memory \(line 7\): a Docker memory size such as '512m'"),
    # 14b. a memory size beyond what the sandbox allows
    (MINIMAL + "[tests]\nmemory = '64g'\n", r"^\[tests\] memory \(line 7\): .*between 64m and 8g, got '64g'"),
    # 15. a Kubernetes quantity in the wrong notation
    (MINIMAL + "[serve.resources]\nmemory_limit = '1 GB'\n", r"^\[serve.resources\] memory_limit \(line 7\): a Kubernetes memory quantity"),
    # 16. the test stage is the stage that serves
    (MINIMAL + "[tests]\nstage = 'code'\n", r"^\(the file\): \[tests\] stage and \[build\] code_stage are both 'code'"),
    # 17. a golden rule without its tolerance
    (MINIMAL + "[golden]\nrule = 'abs_tol'\n", r"^golden \(line 6\): .*rule 'abs_tol' needs a tolerance"),
    # 18. a list where a table belongs
    ("serve = [1, 2]\n" + MINIMAL, r"^serve \(line 1\): .*valid dictionary"),
    # 19. a request above its limit
    (MINIMAL + "[serve.resources]\ncpu_request = '1500m'\ncpu_limit = '1'\n",
     r"^\[serve\] resources \(line 6\): .*cpu_request 1500m is above cpu_limit 1; ask for at most the limit"),
])
def test_each_mistake_is_named_with_its_key_line_and_what_to_do(text, expected):
    import re

    found = problems(text)
    assert any(re.search(expected, p) for p in found), found


def test_every_problem_is_reported_at_once():
    text = MINIMAL + "[serve]\nport = 0\nhealth_path = 'x'\nextra = 1\n"
    assert len(problems(text)) == 3


def test_line_of_finds_keys_in_tables_and_falls_back_to_the_table():
    text = "[app]\nname = 'x'\n\n[serve.resources]\ncpu_limit = '2'\n"
    assert line_of(text, ("app", "name")) == 2
    assert line_of(text, ("serve", "resources", "cpu_limit")) == 5
    assert line_of(text, ("serve", "resources", "memory_limit")) == 4
    assert line_of(text, ("tests",)) is None


def test_a_missing_or_linked_file_is_refused(tmp_path):
    with pytest.raises(AppConfigError, match=r"no aiship.toml at the repository root.*aiship init"):
        read_app_config(tmp_path)
    (tmp_path / "elsewhere.toml").write_text(MINIMAL)
    (tmp_path / "aiship.toml").symlink_to(tmp_path / "elsewhere.toml")
    with pytest.raises(AppConfigError, match="not a link"):
        read_app_config(tmp_path)


def test_a_commit_cannot_rename_the_app_it_delivers():
    config = parse_app_config(MINIMAL)
    assert require_name(config, "iris", "aiship.toml") is config
    with pytest.raises(AppConfigError, match=r"\[app\] name is 'iris' but this repository is registered.*'other'"):
        require_name(config, "other", "aiship.toml at abc")
