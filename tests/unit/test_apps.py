"""The operator's app registrations: checked like aiship.toml, and events routed to exactly one app."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from flows.app_config import AppConfigError
from flows.apps import AppRegistration, check_no_clash, find_app, parse_registration, route
from flows.errors import ConfigurationError
from flows.settings import Environment, Settings

REGRESSOR = """\
name = "regressor"
repository = "/srv/git/regressor.git"
sources = ["local/regressor"]
models = ["diabetes", "diabetes-*"]
default_model = "diabetes"

[environments.staging]
namespace = "regressor-staging"
node_port = 16181

[environments.production]
namespace = "regressor-production"
node_port = 16191
"""


def app(name: str, models: list[str], sources: list[str] = ("acme/*",), port: int = 16100) -> AppRegistration:
    return AppRegistration(name=name, repository=f"/git/{name}", models=models, sources=list(sources),
                           environments={"staging": Environment(name="staging", namespace=f"{name}-s", node_port=port)})


def test_a_registration_file_is_read_with_environment_names_from_their_tables():
    registration = parse_registration(REGRESSOR, "apps/regressor.toml")
    assert registration.environment("staging").namespace == "regressor-staging"
    assert registration.environment("production").name == "production" and registration.promotion_needs_approval
    assert registration.variable == "aiship-app-regressor"


@pytest.mark.parametrize("text, expected", [
    (REGRESSOR.replace('name = "regressor"', 'name = "Regressor!"'), r"^name \(line 1\): lower-case letters"),
    (REGRESSOR.replace("node_port = 16181", "node_port = 30080"), r"^\[environments.staging\] node_port \(line 9\): .*less than or equal to 16199"),
    (REGRESSOR.replace("node_port = 16191", "node_port = 16181"), r"two environments share a NodePort"),
    ("branches = ['main']\n" + REGRESSOR, r"^branches \(line 1\): unknown key"),
    (REGRESSOR + "replica = 3\n", r"^\[environments.production\] replica \(line 14\): unknown key"),
    (REGRESSOR.replace('repository = "/srv/git/regressor.git"\n', ""), r"^repository: required but missing"),
    ('name = "x"\nrepository = "r"\n', r"^environments: required but missing"),
    (REGRESSOR.replace('models = ["diabetes", "diabetes-*"]\n', ""), r"^models: required but missing"),
    ('branch = "refs/heads/main"\n' + REGRESSOR, r"^branch \(line 1\): a branch name such as 'main'"),
    ('branch = "release-*"\n' + REGRESSOR, r"^branch \(line 1\): .*no globs"),
    ('branch = "a..b"\n' + REGRESSOR, r"^branch \(line 1\): a branch name"),
])
def test_each_registration_mistake_is_named(text, expected):
    import re

    with pytest.raises(AppConfigError) as caught:
        parse_registration(text, "apps/regressor.toml")
    assert str(caught.value).startswith("apps/regressor.toml is not a valid aiship configuration")
    assert any(re.search(expected, p) for p in caught.value.problems), caught.value.problems


def test_the_first_app_comes_from_the_settings():
    first = Settings().default_app()
    assert first.name == "aiship-app" and first.models == ["*"] and first.default_model == "breast-cancer"
    assert first.environment("staging").node_port == 16180
    with pytest.raises(ConfigurationError, match="app aiship-app has no environment 'qa'; its environments: production, staging"):
        first.environment("qa")


def test_a_model_goes_to_the_app_that_claims_it_most_specifically():
    apps = [app("aiship-app", ["*"]), app("regressor", ["diabetes", "diabetes-*"], port=16101)]
    assert route(apps, "diabetes", "models").name == "regressor"
    assert route(apps, "diabetes-v2", "models").name == "regressor"
    assert route(apps, "breast-cancer", "models").name == "aiship-app"


def test_a_model_no_app_claims_is_refused_by_name():
    apps = [app("aiship-app", ["breast-cancer"]), app("regressor", ["diabetes"], port=16101)]
    with pytest.raises(ConfigurationError, match=r"no app claims the model 'iris'; add it to the `models` of an app's "
                                                 r"registration \(apps: aiship-app, regressor\)"):
        route(apps, "iris", "models")


def test_two_equally_specific_claims_are_refused():
    apps = [app("a", ["shared"]), app("b", ["shared"], port=16101)]
    with pytest.raises(ConfigurationError, match="claimed as specifically by a and b"):
        route(apps, "shared", "models")


def test_a_push_goes_to_the_app_of_its_repository():
    apps = [app("aiship-app", ["*"], sources=["local/aiship"]), app("regressor", ["d"], sources=["local/regressor"], port=16101)]
    assert route(apps, "local/regressor", "sources").name == "regressor"
    assert route(apps, "local/aiship", "sources").name == "aiship-app"
    with pytest.raises(ConfigurationError, match="no app claims the repository 'evil/fork'"):
        route(apps, "evil/fork", "sources")


def test_a_push_delivers_only_on_the_branch_of_the_app_it_goes_to():
    from flows.apps import push_target

    apps = [app("aiship-app", ["*"], sources=["local/aiship"]),
            app("regressor", ["d"], sources=["local/regressor"], port=16101).model_copy(update={"branch": "release/2"})]
    assert push_target(apps, "local/regressor", "refs/heads/release/2").name == "regressor"
    assert push_target(apps, "local/aiship", "refs/heads/main").name == "aiship-app"
    with pytest.raises(ConfigurationError, match=r"refs/heads/main is not the branch of app regressor \(refs/heads/release/2\)"):
        push_target(apps, "local/regressor", "refs/heads/main")
    with pytest.raises(ConfigurationError, match="not the branch of app aiship-app"):
        push_target(apps, "local/aiship", "refs/tags/v1")


def test_two_apps_may_not_share_a_node_port():
    first = app("aiship-app", ["*"], port=16180)
    with pytest.raises(ConfigurationError, match="NodePort 16180 of regressor/staging is already aiship-app/staging's"):
        check_no_clash(app("regressor", ["d"], sources=["local/regressor"], port=16180), [first])
    check_no_clash(app("regressor", ["d"], sources=["local/regressor"], port=16181), [first])
    check_no_clash(first, [first])  # registering an app again is not a clash with itself
    with pytest.raises(ConfigurationError, match=r"regressor and aiship-app both claim models \['\*'\]"):
        check_no_clash(app("regressor", ["*"], sources=["local/regressor"], port=16181), [first])


def test_an_unknown_app_names_the_known_ones():
    with pytest.raises(ConfigurationError, match=r"unknown app 'nope'; apps aiship delivers: a, b"):
        find_app([app("a", ["x"]), app("b", ["y"], port=16101)], "nope")


@pytest.mark.parametrize("pattern", ["*", "*/*", "*/shop", "shop", "con*/shop", "contoso/", "/shop"])
def test_a_source_must_name_its_owner(pattern):
    with pytest.raises(ValidationError, match="owner spelt out"):
        app("shop", ["m"], sources=[pattern])


def test_the_first_app_delivers_only_the_local_repository_by_default(monkeypatch):
    monkeypatch.delenv("AISHIP_APP_SOURCES", raising=False)
    first = Settings().default_app()
    assert first.sources == ["local/aiship"]
    assert route([first], "local/aiship", "sources").name == first.name
    with pytest.raises(ConfigurationError):
        route([first], "someone/aiship", "sources")
