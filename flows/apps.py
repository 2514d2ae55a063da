"""The apps aiship delivers: the operator's registration of each, and its aiship.toml at a commit.

The operator's side of an app (its repository, which pushes and models deliver it, its
environments with their namespaces and NodePorts, whether promotion needs approval) is an
`AppRegistration`: written as TOML by the operator, checked, and kept in a Prefect Variable
(`aiship-app-<name>`) by `aiship app register`, so every worker reads the same. The app's side is
its repository's aiship.toml, read at the commit delivered. A commit may change its app's facts,
never the name it is delivered under, nor where it goes.

The first app needs no registration: aiship's settings describe it (`Settings.default_app`), so
a single-app aiship is configured as before.
"""

from __future__ import annotations

import fnmatch
import logging
import shutil
from pathlib import Path

from prefect.client.orchestration import get_client
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator
from typing import Annotated

from flows.app_config import AppConfig, AppName, BranchName, load_toml, read_app_config, require_name
from flows.errors import ConfigurationError, PlatformError
from flows.settings import Environment, Settings
from flows.source import SourceTree, checkout

VARIABLE_PREFIX = "aiship-app-"
PAGE = 200  # the Prefect server's largest page of Variables


def _owned_source(pattern: str) -> str:
    """A source pattern names its owner (organisation, or Azure DevOps project) exactly; the repository may be a glob."""
    owner, slash, repo = pattern.partition("/")
    if not slash or not owner or not repo or any(c in owner for c in "*?[]"):
        raise ValueError(f"source {pattern!r} must be owner/repository with the owner spelt out (e.g. contoso/shop or "
                         "contoso/*): a pattern that any owner matches would let a fork or a stranger's repository deliver")
    return pattern


SourcePattern = Annotated[str, AfterValidator(_owned_source)]


def _approver_key(line: str) -> str:
    from flows.approvals import public_key

    public_key(line)
    return line.strip()


class AppRegistration(BaseModel):
    """What the operator decides about one app: where its code comes from and where it goes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: AppName = Field(description="The app's name; its aiship.toml must say the same.")
    repository: str = Field(min_length=1, description="Git URL or path the app's code is checked out from.")
    # No defaults: a registration that claimed everything would tie with the first app on every event.
    sources: list[SourcePattern] = Field(min_length=1, description="Repository names (owner/repo) whose push events deliver this app; the repository part may be a glob, the owner may not.")
    branch: BranchName = Field(default="main", description="The branch whose pushes deliver the app; a model registration delivers it too, and publish reads aiship.toml from it.")
    models: list[str] = Field(min_length=1, description="Model names this app serves; globs allowed. The most specific claim wins.")
    default_model: str | None = Field(default=None, description="The model delivered with a pushed commit when nothing serves yet.")
    environments: dict[str, Environment] = Field(min_length=1, description="Where the app runs, by environment name.")
    promotion_needs_approval: bool = Field(default=True, description="Whether promote waits for a reviewer.")
    approvers: list[Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]] = Field(
        default_factory=list, description="Who may approve its promotions: the reviewer names promote accepts; empty means anyone who holds the Prefect API's credential.")
    approver_keys: dict[Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)],
                        Annotated[str, AfterValidator(_approver_key)]] = Field(
        default_factory=dict, description="Who may approve its promotions, each with an ed25519 public key (the OpenSSH .pub line): an answer must be signed with the reviewer's private key (flows/approvals.py). Instead of approvers.")

    @model_validator(mode="after")
    def _approvers_one_way(self) -> AppRegistration:
        if self.approvers and self.approver_keys:
            raise ValueError("give approvers (names) or approver_keys (names with their public keys), not both: "
                             "with keys, the names are the keys' names")
        return self

    @model_validator(mode="after")
    def _environments_named(self) -> AppRegistration:
        for key, env in self.environments.items():
            if env.name != key:
                raise ValueError(f"environment {key!r} is named {env.name!r}; use the same name for both")
        ports = [env.node_port for env in self.environments.values()]
        if len(set(ports)) != len(ports):
            raise ValueError(f"two environments share a NodePort ({sorted(ports)}); give each its own")
        return self

    def environment(self, name: str) -> Environment:
        """The environment called `name`, or an error listing this app's environments."""
        try:
            return self.environments[name]
        except KeyError:
            known = ", ".join(sorted(self.environments))
            raise ConfigurationError(f"app {self.name} has no environment {name!r}; its environments: {known} "
                                     f"(register it again with the environment added)") from None

    @property
    def variable(self) -> str:
        """The Prefect Variable that keeps this registration."""
        return f"{VARIABLE_PREFIX}{self.name}"


def _name_environments(data: dict) -> None:
    """`[environments.staging]` names its environment: the table's key is the name."""
    environments = data.get("environments")
    for key, env in environments.items() if isinstance(environments, dict) else ():
        if isinstance(env, dict):
            env.setdefault("name", key)


def parse_registration(text: str, where: str) -> AppRegistration:
    """An operator's app registration (TOML); raises AppConfigError naming the file, key and line of each problem."""
    return load_toml(text, where, AppRegistration, _name_environments)


def check_no_clash(registration: AppRegistration, others: list[AppRegistration]) -> None:
    """Refuses a registration whose NodePort, model pattern or source pattern another app already uses."""
    for other in others:
        if other.name == registration.name:
            continue
        for field in ("models", "sources"):
            shared = sorted(set(getattr(registration, field)) & set(getattr(other, field)))
            if shared:
                raise ConfigurationError(f"{registration.name} and {other.name} both claim {field} {shared}: an event "
                                         f"could go to either; give {registration.name} names of its own")
        for env in registration.environments.values():
            for theirs in other.environments.values():
                if env.node_port == theirs.node_port:
                    raise ConfigurationError(f"NodePort {env.node_port} of {registration.name}/{env.name} is already "
                                             f"{other.name}/{theirs.name}'s; choose a free one in 16100-16199")


# ---------------------------------------------------------------- all apps, and routing events to one


def registered_apps() -> list[AppRegistration]:
    """Every app registered with `aiship app register`, from the Prefect Variables."""
    import httpx

    from prefect.client.schemas.objects import Variable

    found: list[Variable] = []
    try:
        with get_client(sync_client=True) as client:
            while True:  # page by page: a platform team registers more apps than one page holds
                page = Variable.model_validate_list(client.request("POST", "/variables/filter", json={
                    "variables": {"name": {"like_": f"{VARIABLE_PREFIX}%"}}, "offset": len(found), "limit": PAGE,
                    "sort": "NAME_ASC"}).json())
                found += page
                if len(page) < PAGE:
                    break
    except (httpx.HTTPError, OSError) as exc:
        if getattr(getattr(exc, "response", None), "status_code", None) == 401:
            raise PlatformError("cannot read the registered apps: the Prefect API refused the credential; set "
                                "PREFECT_API_AUTH_STRING to the server's (locally: .aiship/prefect/api-auth-string)") from exc
        raise PlatformError(f"cannot read the registered apps: the Prefect API does not answer ({type(exc).__name__}); "
                            "start it with `aiship local up prefect` or set PREFECT_API_URL") from exc
    apps = []
    for variable in found:
        if variable.name.startswith(VARIABLE_PREFIX) and isinstance(variable.value, dict):
            try:
                apps.append(AppRegistration.model_validate(variable.value))
            except ValidationError as exc:
                # One broken registration must not stop the other apps' deliveries: it is skipped, and said.
                logging.getLogger("aiship.apps").error(
                    "Prefect Variable %s is not a valid app registration (%d problems: %s); that app is not delivered "
                    "until it is registered again with `aiship app register FILE`", variable.name, exc.error_count(),
                    "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3]))
    return sorted(apps, key=lambda app: app.name)


def register(registration: AppRegistration, settings: Settings) -> AppRegistration:
    """Keeps `registration` in its Prefect Variable, after checking it against every other app."""
    from prefect.variables import Variable

    check_no_clash(registration, all_apps(settings))
    Variable.set(registration.variable, registration.model_dump(mode="json"), overwrite=True)
    return registration


def unregister(name: str) -> bool:
    """Forgets a registered app (its Deployments keep running until removed from the cluster)."""
    from prefect.variables import Variable

    return Variable.unset(f"{VARIABLE_PREFIX}{name}")


def all_apps(settings: Settings) -> list[AppRegistration]:
    """The first app (from the settings) and every registered one; a registration of the same name wins."""
    registered = registered_apps()
    names = {app.name for app in registered}
    first = [] if settings.app_name in names else [settings.default_app()]
    return first + registered


def find_app(apps: list[AppRegistration], name: str) -> AppRegistration:
    """The app called `name`, or an error listing the apps aiship delivers."""
    for app in apps:
        if app.name == name:
            return app
    known = ", ".join(a.name for a in apps) or "none"
    raise ConfigurationError(f"unknown app {name!r}; apps aiship delivers: {known} (register one with `aiship app register FILE`)")


def app_named(settings: Settings, name: str | None) -> AppRegistration:
    """The app called `name`; with no name, the only app aiship delivers (or an error asking which)."""
    apps = all_apps(settings)
    if name:
        return find_app(apps, name)
    if len(apps) == 1:
        return apps[0]
    raise ConfigurationError(f"aiship delivers {len(apps)} apps ({', '.join(a.name for a in apps)}); name one")


def _specificity(pattern: str) -> tuple[bool, int]:
    """Exact names before globs, then the longer literal part."""
    wild = any(c in pattern for c in "*?[")
    return (not wild, len(pattern.replace("*", "").replace("?", "")))


def route(apps: list[AppRegistration], value: str, field: str) -> AppRegistration:
    """The one app whose `field` (models or sources) claims `value` most specifically; refuses none or a tie."""
    claims = [(_specificity(p), app) for app in apps for p in getattr(app, field) if fnmatch.fnmatchcase(value, p)]
    what = "model" if field == "models" else "repository"
    if not claims:
        raise ConfigurationError(f"no app claims the {what} {value!r}; add it to the `{field}` of an app's registration "
                                 f"(apps: {', '.join(a.name for a in apps) or 'none'})")
    best = max(score for score, _ in claims)
    winners = sorted({app.name for score, app in claims if score == best})
    if len(winners) > 1:
        raise ConfigurationError(f"the {what} {value!r} is claimed as specifically by {' and '.join(winners)}; "
                                 f"make one app's `{field}` name it exactly")
    return next(app for score, app in claims if score == best)


def push_target(apps: list[AppRegistration], repo: str, ref: str) -> AppRegistration:
    """The app a push of `ref` to `repo` delivers: the one whose `sources` claim the repository, when
    `ref` is that app's branch. Raises ConfigurationError saying why the push delivers nothing."""
    app = route(apps, repo, "sources")
    if ref != f"refs/heads/{app.branch}":
        raise ConfigurationError(f"{ref} is not the branch of app {app.name} (refs/heads/{app.branch}); only pushes "
                                 "to it deliver: the operator sets `branch` in the app's registration")
    return app


# ---------------------------------------------------------------- the app's side: aiship.toml


def read_config(source: SourceTree, app: AppRegistration) -> AppConfig:
    """The app's aiship.toml at the checked-out commit, refused unless it names the registered app."""
    where = f"aiship.toml at {source.short_sha} of {source.repo_url}"
    return require_name(read_app_config(source.path, where), app.name, where)


def config_at(app: AppRegistration, git_ref: str | None = None) -> AppConfig:
    """The app's aiship.toml at `git_ref` (default: its branch) of its repository, for publish and `config check`."""
    source = checkout(app.repository, git_ref or app.branch)
    try:
        return read_config(source, app)
    finally:
        shutil.rmtree(source.path, ignore_errors=True)


def read_registration_file(path: Path) -> AppRegistration:
    """An operator's registration file, checked."""
    if not path.is_file():
        raise ConfigurationError(f"{path} not found; write the app's registration there (see docs/operator.md)")
    return parse_registration(path.read_text(encoding="utf-8"), str(path))
