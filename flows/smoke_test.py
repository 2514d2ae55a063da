"""Stage 3: run the built image on a loopback port and check it before anything is pushed.

Checks, in order: `/readyz` answers 200 within a deadline; `/version` names the git SHA and model
(name, version, sha256) that the image's labels name; `/predict` reproduces the manifest's golden
set under its rule (exact, or within an absolute tolerance). The container is always removed; a
failure raises SmokeTestError carrying the container's last log lines, and the image is not pushed.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from prefect import task

from flows.app_config import AppConfig, GoldenSection, ServeSection
from flows.errors import SmokeTestError
from flows.image import BuiltImage
from flows.release import LABEL_MODEL_NAME, LABEL_MODEL_SHA256, LABEL_MODEL_VERSION, LABEL_REVISION
from flows.manifest import GoldenSet
from flows.model_store.base import FetchedModel
from flows.ownership import container_labels

SMOKE_LABEL = "io.aiship.smoke-test"
BATCH = 32  # golden rows per /predict request, below the app's row limit

# Where /version may put each field, as dotted paths of its JSON; the first present one is read.
VERSION_FIELDS: dict[str, tuple[str, ...]] = {
    LABEL_REVISION: ("git_sha", "git.sha", "revision"),
    LABEL_MODEL_NAME: ("model.name", "model_name"),
    LABEL_MODEL_VERSION: ("model.version", "model_version"),
    LABEL_MODEL_SHA256: ("model.sha256", "model_sha256"),
}


@dataclass(frozen=True)
class GoldenRow:
    """One golden input with what the manifest expects and what the container answered."""

    index: int
    inputs: tuple[float, ...]
    expected: Any
    got: Any
    ok: bool


class GoldenSetMismatch(SmokeTestError):
    """Raised when the container's predictions break the golden set's rule; carries every row."""

    def __init__(self, message: str, rows: tuple[GoldenRow, ...]) -> None:
        super().__init__(message)
        self.rows = rows


@dataclass(frozen=True)
class SmokeTestResult:
    """A passed smoke test: which checks passed, how many golden rows were compared, how long it took."""

    image: str
    checks_passed: tuple[str, ...]
    golden_rows: int
    mismatches: tuple[int, ...]
    seconds: float
    rows: tuple[GoldenRow, ...] = ()


# ---------------------------------------------------------------- pure parts


def lookup(document: Any, dotted: str) -> Any:
    """The value at `a.b.c` in nested dicts, or None."""
    for part in dotted.split("."):
        if not isinstance(document, dict) or part not in document:
            return None
        document = document[part]
    return document


def docker_memory(quantity: str) -> str:
    """A Kubernetes memory quantity (`768Mi`, `1Gi`) in Docker's notation (`768m`, `1g`)."""
    return quantity.removesuffix("i").lower()


def version_mismatches(version: dict[str, Any], labels: dict[str, str], path: str = "/version") -> list[str]:
    """`label: expected X, <path> says Y` for each label the version path contradicts or omits."""
    problems = []
    for label, paths in VERSION_FIELDS.items():
        value = next((v for v in (lookup(version, p) for p in paths) if v is not None), None)
        if value is None or str(value) != labels.get(label):
            problems.append(f"{label}: expected {labels.get(label)!r}, {path} says {value!r}")
    return problems


def compare_golden(golden: Any, got: list[Any]) -> tuple[GoldenRow, ...]:
    """Row-by-row comparison of the answers with the golden set, under its rule (`GoldenSet.matches`)."""
    bad = set(golden.matches(list(got)))
    rows = []
    for i, (inputs, expected) in enumerate(zip(golden.inputs, golden.expected)):
        answer = got[i] if i < len(got) else None
        rows.append(GoldenRow(i, tuple(inputs), expected, answer, i not in bad))
    return tuple(rows)


def golden_table(rows: tuple[GoldenRow, ...], limit: int = 50) -> list[dict[str, Any]]:
    """The artifact's table: inputs summarized (first values), expected, got, ok."""
    def summary(values: tuple[float, ...]) -> str:
        head = ", ".join(f"{v:.4g}" for v in values[:4])
        return f"[{head}{', …' if len(values) > 4 else ''}] ({len(values)} values)"

    return [{"row": r.index, "inputs": summary(r.inputs), "expected": json.dumps(r.expected),
             "got": json.dumps(r.got), "ok": "yes" if r.ok else "NO"} for r in rows[:limit]]


# ---------------------------------------------------------------- the container


def container_logs(container: Any, lines: int = 50) -> str:
    """The container's last log lines, or why they could not be read.

    The container is stopped first: the app writes a request's access log line just after the
    response, so a container still running may not have logged the request that failed yet.
    """
    try:
        container.stop(timeout=5)
        return container.logs(tail=lines).decode("utf-8", "replace").rstrip()
    except Exception as exc:  # the container may already be gone
        return f"(no logs: {exc})"


def published_port(container: Any, deadline: float, port: str) -> int:
    """The host port dockerd chose for the app's `port` (`8080/tcp`) on 127.0.0.1 (asked for port None:
    no race for a free port)."""
    while time.monotonic() < deadline:
        container.reload()
        bindings = (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(port)
        if bindings:
            return int(bindings[0]["HostPort"])
        if container.status in ("exited", "dead"):
            break
        time.sleep(0.1)
    raise SmokeTestError(f"container {container.short_id} published no port for {port} (status {container.status}); "
                         "check [serve] port in aiship.toml against the port the app listens on")


def wait_ready(http: httpx.Client, container: Any, deadline: float, budget: float, path: str = "/readyz") -> None:
    """Polls the readiness path until 200; fails early when the container exits, else at the deadline."""
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            response = http.get(path, timeout=2)
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        container.reload()
        if container.status in ("exited", "dead"):
            code = container.attrs.get("State", {}).get("ExitCode")
            raise SmokeTestError(f"container exited (code {code}) before {path} answered 200; last: {last}")
        time.sleep(0.25)
    raise SmokeTestError(f"{path} did not answer 200 within {budget:.0f} s; last: {last}")


def predict_all(http: httpx.Client, inputs: list[list[float]], path: str = "/predict") -> list[Any]:
    """The container's predictions for every golden row, sent in batches."""
    got: list[Any] = []
    for start in range(0, len(inputs), BATCH):
        response = http.post(path, json={"instances": inputs[start:start + BATCH]}, timeout=30)
        if response.status_code != 200:
            raise SmokeTestError(f"{path} answered HTTP {response.status_code}: {response.text[:300]}")
        got.extend(response.json()["predictions"])
    return got


def golden_under(golden: GoldenSet, rule: GoldenSection) -> GoldenSet:
    """The golden set compared under the app's rule (aiship.toml [golden]) instead of the manifest's, when it sets one."""
    if rule.rule == "manifest":
        return golden
    return golden.model_copy(update={"rule": rule.rule, "tolerance": rule.tolerance})


def check_container(http: httpx.Client, labels: dict[str, str], golden: GoldenSet,
                    serve: ServeSection = ServeSection()) -> tuple[tuple[str, ...], tuple[GoldenRow, ...]]:
    """The version path against the labels, then the golden set; raises SmokeTestError on the first failure."""
    response = http.get(serve.version_path, timeout=5)
    if response.status_code != 200:
        raise SmokeTestError(f"{serve.version_path} answered HTTP {response.status_code}: {response.text[:300]}")
    problems = version_mismatches(response.json(), labels, serve.version_path)
    if problems:
        raise SmokeTestError(f"{serve.version_path} does not match the image's labels: " + "; ".join(problems))
    rows = compare_golden(golden, predict_all(http, [list(r) for r in golden.inputs], serve.predict_path))
    bad = [r for r in rows if not r.ok]
    if bad:
        shown = "; ".join(f"row {r.index}: expected {r.expected!r}, got {r.got!r}" for r in bad[:5])
        raise GoldenSetMismatch(
            f"golden set failed ({golden.rule}): {len(bad)} of {len(rows)} rows differ: {shown}; "
            "this model does not reproduce its own golden set: retrain or re-publish it", rows)
    return ("readyz", "version", "golden_set"), rows


def run_smoke_test(client: Any, image: str, labels: dict[str, str], golden: GoldenSet,
                   ready_within: float = 90.0, env: dict[str, str] | None = None,
                   serve: ServeSection = ServeSection(), mounts: tuple[tuple[str, Any], ...] = ()) -> SmokeTestResult:
    """Runs `image` on 127.0.0.1:<free port>, checks it, and always removes the container.

    `mounts`: (path in the image, file here) mounted read-only, the model's files when the image
    is the code image alone (`BuiltImage.loaded` false).
    """
    started = time.monotonic()
    deadline = started + ready_within
    container_port = f"{serve.port}/tcp"
    # The image is the app's code: no capabilities, no privilege escalation, bounded memory and processes.
    container = client.containers.run(
        image, detach=True, name=f"aiship-smoke-{uuid.uuid4().hex[:10]}",
        ports={container_port: ("127.0.0.1", None)}, labels={SMOKE_LABEL: "1", **container_labels()}, environment=env or {},
        # as the pod runs it (deployments/deployment.yaml): an app that writes outside /tmp fails here
        cap_drop=["ALL"], security_opt=["no-new-privileges"], pids_limit=512, read_only=True,
        tmpfs={"/tmp": "size=64m,mode=1777"}, mem_limit=docker_memory(serve.resources.memory_limit),
        volumes={str(path): {"bind": "/" + name.lstrip("/"), "mode": "ro"} for name, path in mounts},
    )
    try:
        port = published_port(container, deadline, container_port)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            wait_ready(http, container, deadline, ready_within, serve.ready_path)
            checks, rows = check_container(http, labels, golden, serve)
    except SmokeTestError as exc:
        message = f"smoke test of {image} failed: {exc}\n--- container log (last lines) ---\n{container_logs(container)}"
        if isinstance(exc, GoldenSetMismatch):
            raise GoldenSetMismatch(message, exc.rows) from exc
        raise SmokeTestError(message) from exc
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        raise SmokeTestError(f"smoke test of {image} failed: {type(exc).__name__}: {exc}\n"
                             f"--- container log (last lines) ---\n{container_logs(container)}") from exc
    finally:
        container.remove(force=True)
    mismatches = tuple(r.index for r in rows if not r.ok)
    return SmokeTestResult(image, checks, len(rows), mismatches, round(time.monotonic() - started, 3), rows)


def check_unchanged(built: BuiltImage) -> None:
    """Proves that the model layer holds what the smoke test mounted, or raises SmokeTestError.

    The layer's entries are exactly the mounted files: the model's bytes hash to the release's
    verified sha256 (read from the layer itself), the manifest's bytes are the mounted file's, and
    no mounted file was written after the layer (they sit in the run's private work folder and
    were mounted read-only). One read of the model, far less than `docker load` writes.
    """
    import hashlib
    import tarfile

    def refuse(what: str) -> SmokeTestError:
        return SmokeTestError(f"the model layer of {built.tag} does not hold what its smoke test mounted: {what}; "
                              "build again")

    layer_written = built.model_layer.path.stat().st_mtime_ns
    mounted = {name.strip("/"): path for name, path in built.model_files}
    with tarfile.open(built.model_layer.path) as layer:
        members = {m.name: m for m in layer.getmembers()}
        if sorted(members) != sorted(mounted):
            raise refuse(f"entries {sorted(members)}, mounted {sorted(mounted)}")
        for name, path in mounted.items():
            if not path.is_file() or path.stat().st_mtime_ns > layer_written:
                raise refuse(f"{path} (mounted at /{name}) changed after the layer was written from it")
            content = layer.extractfile(members[name])
            if path.name == "manifest.json":
                if content.read() != path.read_bytes():
                    raise refuse(f"/{name} differs from {path}")
                continue
            digest = hashlib.sha256()
            while chunk := content.read(4 << 20):
                digest.update(chunk)
            if digest.hexdigest() != built.release.model.sha256:
                raise refuse(f"/{name} has sha256 {digest.hexdigest()}, not the verified {built.release.model.sha256}")


@task(name="smoke-test")
def smoke_test(built: BuiltImage, model: FetchedModel, config: AppConfig, ready_within: float = 90.0) -> SmokeTestResult:
    """Runs the built image and checks health, version and the golden set; never retried.

    A failure is an answer about this image (it must not be pushed), not an accident.

    Args:
        built: the image to test.
        model: the fetched model whose manifest holds the golden set.
        config: the app's aiship.toml (port, paths, golden-set rule).
        ready_within: seconds the container has to answer its readiness path.

    Returns:
        The checks passed and the golden rows compared.
    """
    from prefect.artifacts import create_table_artifact

    from flows.image import docker_client

    client = docker_client()
    try:
        golden = golden_under(model.ref.manifest.golden_set, config.golden)
        if built.loaded:
            result = run_smoke_test(client, built.image_id, built.labels, golden, ready_within, serve=config.serve)
        else:
            result = run_smoke_test(client, built.code_image_id, built.labels, golden, ready_within, serve=config.serve,
                                    mounts=built.model_files)
            check_unchanged(built)
    except GoldenSetMismatch as exc:
        create_table_artifact(key=f"smoke-test-{config.name}", table=golden_table(exc.rows),
                              description=f"Golden set of {built.tag}: FAILED, the image is not pushed")
        raise
    finally:
        client.close()
    create_table_artifact(key=f"smoke-test-{config.name}", table=golden_table(result.rows),
                          description=f"Golden set of {built.tag}: {result.golden_rows} rows, all matching")
    return result
