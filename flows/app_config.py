"""`aiship.toml`: what an app's own repository tells aiship about the app, read at the commit delivered.

Only app facts live here (its Dockerfile and stages, where the model goes, its port and paths,
how its tests run, the model types its loader accepts, what it asks for to run). What decides
where the app goes (environments, namespaces, registries, clusters, credentials, which branch
delivers) is the operator's and never read from the app's repository: a commit can change its
app, not redirect production.

Every mistake is reported with the file, the key, its line where one is found, what was expected
and what to do, all at once (`AppConfigError.problems`).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from flows.errors import ConfigurationError

M = TypeVar("M", bound=BaseModel)
CONFIG_FILE = "aiship.toml"
JUNIT_PLACEHOLDER = "{junit}"
_NAME = re.compile(r"[a-z]([-a-z0-9]{0,38}[a-z0-9])?")
_CPU = re.compile(r"\d+m|\d+(\.\d+)?")
_MEMORY = re.compile(r"\d+(Ki|Mi|Gi)")
_DOCKER_MEMORY = re.compile(r"\d+[kmg]")
_TYPE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")


class AppConfigError(ConfigurationError):
    """Raised when an app's aiship.toml is missing, is not TOML, or breaks its schema; lists every problem."""

    def __init__(self, where: str, problems: list[str]) -> None:
        self.where = where
        self.problems = problems
        listed = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{where} is not a valid aiship configuration ({len(problems)} problem(s)):\n{listed}\n"
                         "Fix the file and commit it (`aiship config check` reads it the way a delivery does).")

    def __reduce__(self):
        return (type(self), (self.where, self.problems))


def _relative_path(value: str) -> str:
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts or "\\" in value:
        raise ValueError("a path inside the repository, relative to its root, without '..'")
    return value


def _url_path(value: str) -> str:
    if not value.startswith("/") or any(c.isspace() for c in value) or "?" in value or "#" in value:
        raise ValueError("an HTTP path starting with '/' (no spaces, query or fragment)")
    return value


def _pattern(regex: re.Pattern[str], expected: str):
    def check(value: str) -> str:
        if not regex.fullmatch(value):
            raise ValueError(expected)
        return value
    return check


AppName = Annotated[str, AfterValidator(_pattern(_NAME, "lower-case letters, digits and '-', starting with a letter, at most 40 characters"))]
RepoPath = Annotated[str, AfterValidator(_relative_path)]
UrlPath = Annotated[str, AfterValidator(_url_path)]
# A branch as `git check-ref-format --branch` takes it, without globs: it is checked out by name.
_BRANCH = re.compile(r"(?!/)(?!.*(?:\.\.|//|@\{|\.lock(?:/|$)|/$|\.$))[A-Za-z0-9._/-]{1,200}")


def _branch(value: str) -> str:
    if value.startswith("refs/") or not _BRANCH.fullmatch(value):
        raise ValueError(f"a branch name such as 'main' or 'release/2.1' (no refs/heads/, no globs), got {value!r}")
    return value


BranchName = Annotated[str, AfterValidator(_branch)]
def cpu_millis(quantity: str) -> int:
    """A Kubernetes CPU quantity ('250m', '1', '0.5') in millicores."""
    return int(quantity[:-1]) if quantity.endswith("m") else round(float(quantity) * 1000)


def memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity ('256Mi', '1Gi') in bytes."""
    return int(quantity[:-2]) << {"Ki": 10, "Mi": 20, "Gi": 30}[quantity[-2:]]


CpuQuantity = Annotated[str, AfterValidator(_pattern(_CPU, "a Kubernetes CPU quantity such as '250m' or '1'"))]
MemoryQuantity = Annotated[str, AfterValidator(_pattern(_MEMORY, "a Kubernetes memory quantity such as '256Mi' or '1Gi'"))]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AppSection(_Section):
    """[app]: who the app is."""

    name: AppName = Field(description="The app's name: its image repository and its Kubernetes Deployment and Service.")


class BuildSection(_Section):
    """[build]: how the image is built from the repository."""

    dockerfile: RepoPath = Field(default="Dockerfile", description="The Dockerfile, relative to the repository root.")
    code_stage: str = Field(default="code", min_length=1, description="The Dockerfile stage that holds the app without its model; aiship adds the model layer on top.")
    requirements: list[RepoPath] = Field(default_factory=list, description="Pinned requirement files whose wheels aiship downloads on the host into the context's wheels/ (builds run without network).")


class ModelSection(_Section):
    """[model]: where the model goes and what the app's loader accepts."""

    dir: str = Field(default="/opt/model", description="Absolute folder in the image that receives the model file and manifest.json.")
    types: list[Annotated[str, AfterValidator(_pattern(_TYPE, "a dotted Python type name such as 'numpy.ndarray'"))]] = Field(
        min_length=1, description="Every type the app's loader constructs from a skops file; a model naming another type is refused at publish and before a build.")

    @model_validator(mode="after")
    def _absolute_dir(self) -> ModelSection:
        path = PurePosixPath(self.dir)
        if not path.is_absolute() or ".." in path.parts or path == PurePosixPath("/"):
            raise ValueError(f"dir must be an absolute folder in the image such as '/opt/model', got {self.dir!r}")
        return self


class Resources(_Section):
    """[serve.resources]: what one pod asks for and may use."""

    cpu_request: CpuQuantity = "100m"
    memory_request: MemoryQuantity = "256Mi"
    cpu_limit: CpuQuantity = "1"
    memory_limit: MemoryQuantity = "768Mi"

    @model_validator(mode="after")
    def _requests_within_limits(self) -> Resources:
        if cpu_millis(self.cpu_request) > cpu_millis(self.cpu_limit):
            raise ValueError(f"cpu_request {self.cpu_request} is above cpu_limit {self.cpu_limit}; ask for at most the limit")
        if memory_bytes(self.memory_request) > memory_bytes(self.memory_limit):
            raise ValueError(f"memory_request {self.memory_request} is above memory_limit {self.memory_limit}; "
                             "ask for at most the limit")
        return self


class ServeSection(_Section):
    """[serve]: how the running app is reached and checked."""

    port: int = Field(default=8080, ge=1, le=65535, description="The port the app listens on inside its container.")
    health_path: UrlPath = Field(default="/healthz", description="Liveness: 200 while the process is sound.")
    ready_path: UrlPath = Field(default="/readyz", description="Readiness: 200 once the model is loaded.")
    version_path: UrlPath = Field(default="/version", description="JSON naming the git SHA and the model (name, version, sha256).")
    predict_path: UrlPath = Field(default="/predict", description="POST {\"instances\": [...]} -> {\"predictions\": [...]}.")
    replicas: int = Field(default=2, ge=1, le=20, description="Pods wanted in each environment (the operator may set another count).")
    resources: Resources = Field(default_factory=Resources)


class TestsSection(_Section):
    """[tests]: the app's own tests, run sandboxed in a container of its test stage."""

    stage: str = Field(default="test", min_length=1, description="The Dockerfile stage with the app and its test dependencies.")
    command: list[str] = Field(default_factory=lambda: ["python", "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={JUNIT_PLACEHOLDER}"],
                               min_length=1, description="The test command; '{junit}' is replaced by the JUnit XML path aiship reads back.")
    timeout_seconds: int = Field(default=600, ge=10, le=3600, description="The tests are stopped after this long.")
    cpus: float = Field(default=1.0, gt=0, le=8, description="CPUs the test container may use.")
    memory: Annotated[str, AfterValidator(_pattern(_DOCKER_MEMORY, "a Docker memory size such as '512m' or '2g'"))] = "1g"

    @field_validator("memory")
    @classmethod
    def _memory_cap(cls, value: str) -> str:
        size = int(value[:-1]) * {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[value[-1]]
        if size > 8 << 30 or size < 64 << 20:
            raise ValueError(f"between 64m and 8g, got {value!r}")
        return value

    @model_validator(mode="after")
    def _junit_named(self) -> TestsSection:
        if not any(JUNIT_PLACEHOLDER in arg for arg in self.command):
            raise ValueError(f"command must pass {JUNIT_PLACEHOLDER} where the runner writes its JUnit XML report, "
                             f"e.g. \"--junitxml={JUNIT_PLACEHOLDER}\"")
        return self


class GoldenSection(_Section):
    """[golden]: how the smoke test compares the model's golden set (default: the manifest's own rule)."""

    rule: Literal["manifest", "exact", "abs_tol"] = "manifest"
    tolerance: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _tolerance(self) -> GoldenSection:
        if self.rule == "abs_tol" and self.tolerance is None:
            raise ValueError("rule 'abs_tol' needs a tolerance, e.g. tolerance = 1e-6")
        if self.rule != "abs_tol" and self.tolerance is not None:
            raise ValueError(f"tolerance is only read with rule 'abs_tol', not {self.rule!r}")
        return self


class AppConfig(_Section):
    """An app's aiship.toml."""

    app: AppSection
    build: BuildSection = Field(default_factory=BuildSection)
    model: ModelSection
    serve: ServeSection = Field(default_factory=ServeSection)
    tests: TestsSection = Field(default_factory=TestsSection)
    golden: GoldenSection = Field(default_factory=GoldenSection)

    @model_validator(mode="after")
    def _distinct_stages(self) -> AppConfig:
        if self.build.code_stage.lower() == self.tests.stage.lower():
            raise ValueError(f"[tests] stage and [build] code_stage are both {self.tests.stage!r}: the test stage "
                             "adds test dependencies, which must never reach the image that serves")
        return self

    @property
    def name(self) -> str:
        """The app's name."""
        return self.app.name


# ---------------------------------------------------------------- reading the file


def line_of(text: str, loc: tuple[str | int, ...]) -> int | None:
    """The line (1-based) where the key at `loc` is written, or its table's header, or None."""
    keys = [str(part) for part in loc if isinstance(part, str)]
    if not keys:
        return None
    table: list[str] = []
    header_line = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if header := re.fullmatch(r"\[\s*([^\[\]]+?)\s*\]", line):
            table = [part.strip().strip('"') for part in header.group(1).split(".")]
            if table == keys:
                header_line = number
            continue
        key = re.match(r"([A-Za-z0-9_\-\"]+)\s*=", line)
        if key and table + [key.group(1).strip('"')] == keys:
            return number
    if header_line is None and len(keys) > 1:
        return line_of(text, tuple(keys[:-1]))
    return header_line


def _key(loc: tuple[str | int, ...]) -> str:
    parts = [str(p) for p in loc if isinstance(p, str)]
    index = [f"[{p}]" for p in loc if isinstance(p, int)]
    if not parts:
        return "(the file)"
    return (f"[{'.'.join(parts[:-1])}] {parts[-1]}" if len(parts) > 1 else parts[0]) + "".join(index)


def _problem(text: str, error: dict) -> str:
    loc = tuple(error["loc"])
    kind, message = error["type"], error["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        message = "unknown key; check its spelling against `aiship init --help` or docs/app-config.md"
    elif kind == "missing":
        message = "required but missing; add it"
    elif "input" in error and kind != "value_error" and not isinstance(error["input"], dict):
        message = f"{message}, got {error['input']!r}"
    line = line_of(text, loc)
    return f"{_key(loc)}{f' (line {line})' if line else ''}: {message}"


def load_toml(text: str, where: str, model: type[M], prepare: Callable[[dict], None] | None = None) -> M:
    """Parses TOML `text` into `model`; raises AppConfigError naming every problem with its key and line.

    `prepare` may fill what the file leaves implicit before validation (it must not raise).
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AppConfigError(where, [f"not valid TOML: {exc}"]) from None
    if prepare:
        prepare(data)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise AppConfigError(where, [_problem(text, e) for e in exc.errors()]) from None


def parse_app_config(text: str, where: str = CONFIG_FILE) -> AppConfig:
    """Parses and validates aiship.toml's text; raises AppConfigError naming every problem."""
    return load_toml(text, where, AppConfig)


def read_app_config(repo_dir: Path, where: str | None = None) -> AppConfig:
    """Reads `aiship.toml` at the root of a checked-out repository."""
    path = repo_dir / CONFIG_FILE
    label = where or str(path)
    if path.is_symlink() or not path.is_file():
        raise AppConfigError(label, [f"no {CONFIG_FILE} at the repository root (a regular file, not a link); "
                                     "run `aiship init` there and commit what it writes"])
    return parse_app_config(path.read_text(encoding="utf-8"), label)


def require_name(config: AppConfig, expected: str, where: str) -> AppConfig:
    """Refuses a configuration whose app name is not the one aiship delivers from this repository."""
    if config.name != expected:
        raise AppConfigError(where, [
            f"[app] name is {config.name!r} but this repository is registered with aiship as {expected!r}; "
            "a commit cannot rename the app it delivers: put the name back, or ask the operator to register a new app"])
    return config
