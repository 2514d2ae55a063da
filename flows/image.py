"""Stage 2: build the app image — base, dependencies and code with the Docker SDK, the model last.

dockerd builds the Dockerfile up to its `code` stage from a context assembled from two places: the
checked-out source tree (filtered by its `.dockerignore`) and the wheelhouse prepared on the host
(`wheels/`), streamed as a tar written on the fly. The model layer is not built by dockerd:
`flows.oci` writes it as a reproducible tar and the image's config on top of the code image, and
`docker load` adds that layer to the daemon for the smoke test. The pushed image is this image:
same config, same digest (`flows.registry.push_built`).
"""

from __future__ import annotations

import logging
import os
import re
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from prefect import task

from flows import oci
from flows.app_config import AppConfig
from flows.errors import ImageBuildError
from flows.model_store.base import FetchedModel
from flows.oci import ModelLayer
from flows.release import LABEL_CREATED, Release
from flows.retry import is_transient, retry_condition
from flows.settings import Settings
from flows.source import SourceTree

logger = logging.getLogger("aiship.image")

MODEL_DIR = "model"
WHEELS_DIR = "wheels"
CODE_STAGE = "code"  # the Dockerfile stage dockerd builds; the model layer goes on top of it
LAYER_FILE = "aiship-model-layer.tar"  # written next to the fetched model, in the run's work folder
_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class BuiltImage:
    """An image built locally and tagged, not yet pushed.

    `image_id` is the digest of `config`, the config the push writes: the image smoke-tested is the
    image pushed. `code_tag` names the image dockerd built (everything but the model layer), and
    `code_image_id` is that image's id.

    When `loaded`, dockerd holds the whole image under `tag`. Otherwise it holds the code image
    only, and `model_files` ((path in the image, file here)) are what the model layer holds, byte
    for byte: the smoke test mounts them, read-only, where the layer puts them.
    """

    release: Release
    image_id: str
    tag: str
    labels: dict[str, str]
    code_tag: str
    code_image_id: str
    model_layer: ModelLayer
    config: bytes = field(repr=False)
    size_bytes: int
    seconds: float
    steps_cached: int
    steps_run: tuple[str, ...]
    build_log_tail: tuple[str, ...] = field(default=(), repr=False)
    # (part, seconds): the code image (dockerd), the model layer (written and hashed), docker load
    timings: tuple[tuple[str, float], ...] = ()
    loaded: bool = True
    model_files: tuple[tuple[str, Path], ...] = ()


# ---------------------------------------------------------------- pure parts: tag and labels


# On the code image: a digest of everything its build reads, so that a build of the same inputs
# finds it in dockerd and skips dockerd's build (its context upload and cache checks, about a second).
LABEL_CODE_INPUTS = "io.aiship.code-inputs"


def code_inputs(members: list[tuple[str, Path]], wheels_dir: Path, base_image_id: str, buildargs: dict[str, str],
                dockerfile: str, code_stage: str) -> str:
    """sha256 of the code image's build inputs: each context file's name, mode and bytes, the wheels
    folder by its name (`flows.wheels` names it by its requirements and never changes it once
    complete), the base image by its id, the build arguments, the Dockerfile and the stage."""
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps([dockerfile, code_stage, base_image_id, sorted(buildargs.items()),
                                        wheels_dir.name]).encode())
    for name, path in members:
        if name.startswith(f"{WHEELS_DIR}/"):
            continue
        digest.update(f"\0{name}\0{path.stat().st_mode & 0o7777:o}\0".encode())
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def known_code_image(client: Any, code: str, inputs: str) -> dict[str, Any] | None:
    """dockerd's inspect of the code image `code` when it was built from `inputs`, else None."""
    import docker.errors

    try:
        image = client.api.inspect_image(code)
    except docker.errors.ImageNotFound:
        return None
    return image if ((image.get("Config") or {}).get("Labels") or {}).get(LABEL_CODE_INPUTS) == inputs else None


def code_tag(image: str, git_sha: str) -> str:
    """`<registry>/<app>:code-<gitsha12>` for the image `<registry>/<app>:<tag>`: the app without its model."""
    return f"{image.rpartition(':')[0]}:{CODE_STAGE}-{git_sha[:12]}"


def has_stage(dockerfile: str, stage: str) -> bool:
    """True when the Dockerfile has a `FROM … AS <stage>` line (names are case-insensitive)."""
    pattern = rf"^\s*FROM\s+(--\S+\s+)*\S+\s+AS\s+{re.escape(stage)}\s*$"
    return any(re.match(pattern, line, re.IGNORECASE) for line in dockerfile.splitlines())


def rfc3339(moment: datetime) -> str:
    """A timezone-aware time as RFC 3339 in UTC (`2024-05-01T12:00:00Z`); naive times are refused."""
    if moment.tzinfo is None:
        raise ImageBuildError(f"commit time {moment.isoformat()} has no timezone; read it with git's %cI")
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def without_credentials(url: str) -> str:
    """`url` without a user or token (`https://user:token@host/x` -> `https://host/x`): labels are public."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if not parts.netloc or "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def image_labels(release: Release, committed_at: datetime, repo_url: str) -> dict[str, str]:
    """The image's labels. `created` is the commit's time, so the same inputs give the same labels."""
    return release.labels(rfc3339(committed_at), without_credentials(repo_url))


# ---------------------------------------------------------------- the build context


def inside(root: Path, path: Path) -> bool:
    """True when `path`, with every link followed, stays inside `root`."""
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def context_members(source_dir: Path, wheels_dir: Path, dockerfile: str = "Dockerfile",
                    stages: tuple[str, ...] = (CODE_STAGE,)) -> list[tuple[str, Path]]:
    """(name in the context, file on disk) for every file of the build context, sorted by name.

    The source tree is filtered by its `.dockerignore`; `wheels/` is added whole. The model is not
    in the context: it becomes a layer of its own (`flows.oci`). A link that leads out of the
    repository is refused: the context is the repository's, never the worker's files.
    """
    from docker.utils.build import exclude_paths

    ignore = source_dir / ".dockerignore"
    patterns = [p for p in ignore.read_text().splitlines() if p.strip() and not p.startswith("#")] if ignore.exists() else []
    members: dict[str, Path] = {}
    for rel in exclude_paths(str(source_dir), patterns):
        if rel == ".git" or rel.startswith(".git/"):
            continue  # the clone's config may carry the repository's credentials: never in an image
        path = source_dir / rel
        if not inside(source_dir, path):
            raise ImageBuildError(f"{rel} in the build context of {source_dir} is a link to {path.resolve()}, outside "
                                  "the repository; aiship refuses it: commit the file itself, or list it in .dockerignore")
        if path.is_file() and not rel.startswith((f"{WHEELS_DIR}/", f"{MODEL_DIR}/")):
            members[rel] = path
    if dockerfile not in members:
        raise ImageBuildError(f"no {dockerfile} in {source_dir} (or .dockerignore excludes it); commit one, or name "
                              "yours in aiship.toml's [build] dockerfile (`aiship init` writes one)")
    text = members[dockerfile].read_text()
    for stage in stages:
        if not has_stage(text, stage):
            raise ImageBuildError(
                f"{source_dir}/{dockerfile} has no `FROM … AS {stage}` stage; aiship builds the code stage "
                "(base, dependencies, app code) and adds the model layer itself, and runs the tests in the test "
                f"stage: name them as aiship.toml's [build] code_stage and [tests] stage say")
    for wheel in sorted(wheels_dir.iterdir()):
        if wheel.is_file() and not wheel.name.startswith("."):
            members[f"{WHEELS_DIR}/{wheel.name}"] = wheel
    return sorted(members.items())


def _tar_info(name: str, path: Path) -> tarfile.TarInfo:
    # Owner and times fixed: the classic builder's cache ignores them, but a stable tar is easier to debug.
    info = tarfile.TarInfo(name)
    info.size = path.stat().st_size
    info.mode = 0o644
    info.mtime = 0
    return info


def write_context(members: list[tuple[str, Path]], out: BinaryIO) -> int:
    """Writes the members as an uncompressed tar stream to `out`; returns the bytes of file data."""
    total = 0
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name, path in members:
            info = _tar_info(name, path)
            with path.open("rb") as f:
                tar.addfile(info, f)
            total += info.size
    return total


def stream_tar(write: Callable[[BinaryIO], object]) -> tuple[BinaryIO, threading.Thread, list[BaseException]]:
    """A pipe that `write` fills from a thread while dockerd reads it (no temporary tar file)."""
    read_fd, write_fd = os.pipe()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with os.fdopen(write_fd, "wb", buffering=1 << 20) as out:
                write(out)
        except BaseException as exc:  # reported by the caller; the reader sees a truncated tar
            errors.append(exc)

    thread = threading.Thread(target=writer, name="aiship-tar-stream", daemon=True)
    thread.start()
    return os.fdopen(read_fd, "rb"), thread, errors


# ---------------------------------------------------------------- the build stream


@dataclass
class BuildProgress:
    """What the daemon's build stream said so far: steps, which came from the cache, image id, error."""

    step: str = ""
    steps: list[str] = field(default_factory=list)
    cached_steps: list[str] = field(default_factory=list)
    image_id: str = ""
    error: str = ""
    tail: list[str] = field(default_factory=list)

    @property
    def cached(self) -> int:
        return len(self.cached_steps)

    @property
    def run_steps(self) -> list[str]:
        """Steps the daemon executed (not taken from its cache), as `Step N/M : INSTRUCTION` lines."""
        return [s for s in self.steps if s not in self.cached_steps]

    def feed(self, chunk: dict[str, Any]) -> str | None:
        """Takes one decoded stream chunk; returns its text line for the log, if it has one."""
        if "error" in chunk or "errorDetail" in chunk:
            self.error = (chunk.get("errorDetail") or {}).get("message") or str(chunk.get("error", "")).strip()
            return f"ERROR: {self.error}"
        if isinstance(chunk.get("aux"), dict) and "ID" in chunk["aux"]:
            self.image_id = chunk["aux"]["ID"]
            return None
        line = _ANSI.sub("", str(chunk.get("stream", chunk.get("status", "")))).rstrip()
        if not line.strip():
            return None
        if _STEP.match(line.strip()):
            self.step = line.strip()
            self.steps.append(self.step)
        elif line.strip() == "---> Using cache" and self.step:
            self.cached_steps.append(self.step)
        elif line.startswith("Successfully built ") and not self.image_id:
            self.image_id = line.split()[-1]
        self.tail = (self.tail + [line])[-30:]
        return line


def _run_logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        from prefect import get_run_logger

        return get_run_logger()
    except Exception:  # outside a flow or task run: Prefect raises MissingContextError
        return logger


def run_build(client: Any, members: list[tuple[str, Path]], tag: str, labels: dict[str, str],
              buildargs: dict[str, str], timeout: int = 1800, nocache: bool = False,
              target: str | None = None, dockerfile: str = "Dockerfile") -> BuildProgress:
    """Streams the context to dockerd, every line to the run logger; raises ImageBuildError on error."""
    import docker.errors
    import requests.exceptions

    log = _run_logger()
    progress = BuildProgress()
    reader, writer, writer_errors = stream_tar(lambda out: write_context(members, out))
    try:
        # No network: the app's Dockerfile steps are its code, and the wheels are in the context.
        chunks = client.api.build(fileobj=reader, custom_context=True, tag=tag, labels=labels,
                                  buildargs=buildargs, rm=True, forcerm=True, decode=True, timeout=timeout,
                                  nocache=nocache, target=target, dockerfile=dockerfile, network_mode="none")
        for chunk in chunks:
            line = progress.feed(chunk)
            if line:
                log.info("docker build: %s", line)
    except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
        raise ImageBuildError(
            f"docker build of {tag} failed at {progress.step or 'the context upload'}: {exc}; is Docker running?",
            transient=is_transient(exc),
        ) from exc
    finally:
        reader.close()
        writer.join(timeout=30)
    if writer_errors and not progress.error:
        raise ImageBuildError(f"writing the build context of {tag} failed: {writer_errors[0]}") from writer_errors[0]
    if progress.error or not progress.image_id:
        raise ImageBuildError(_failure_message(tag, progress, buildargs.get("BASE_IMAGE", "")))
    return progress


def _failure_message(tag: str, progress: BuildProgress, base_image: str) -> str:
    hint = "fix the Dockerfile step or the app's requirements and push again"
    if base_image and base_image.split(":")[0] in progress.error:
        hint = f"the base image {base_image} is missing; build it with `aiship local up base-image`"
    output = "\n".join(line for line in progress.tail[-12:] if not line.startswith("ERROR: "))
    return (f"docker build of {tag} failed at {progress.step or 'the start'}: "
            f"{progress.error or 'the daemon reported no image id'}; {hint}\n--- last build output ---\n{output}")


def load_image(client: Any, config: bytes, tag: str, layer: ModelLayer) -> dict[str, Any]:
    """Makes dockerd hold the image `config` describes, tagged `tag`; returns dockerd's inspect of it,
    whose `Id` is the config digest.

    When dockerd has it already (same code image, model and labels) it is only tagged again.
    """
    import docker.errors

    image_id = oci.digest_of(config)
    repo, _, name = tag.rpartition(":")
    said: list[str] = []
    try:
        client.api.inspect_image(image_id)
    except docker.errors.ImageNotFound:
        reader, writer, writer_errors = stream_tar(lambda out: oci.write_docker_archive(config, tag, layer, out))
        try:
            for chunk in client.api.load_image(reader) or ():
                said.append(str((chunk.get("errorDetail") or {}).get("message") or chunk.get("error")
                                or chunk.get("message") or chunk.get("stream") or chunk).strip())
        except docker.errors.APIError as exc:
            raise ImageBuildError(f"docker load of {tag} failed: {exc}; is Docker running?", transient=is_transient(exc)) from exc
        finally:
            reader.close()
            writer.join(timeout=60)
        if writer_errors:
            raise ImageBuildError(f"writing the image archive of {tag} failed: {writer_errors[0]}") from writer_errors[0]
    try:
        # Tagged in any case: `docker load` leaves the image's LastTagTime unset, and the clean-up
        # keeps the images tagged last (`cleanup.prune_images`).
        client.api.tag(image_id, repo, name, force=True)
        loaded = client.api.inspect_image(tag)
    except docker.errors.ImageNotFound:
        raise ImageBuildError(f"docker load of {tag} did not give the image; dockerd said: {' | '.join(said)[-500:]}; "
                              "check that the code image it stands on is still there and build again") from None
    if loaded["Id"] != image_id:
        raise ImageBuildError(f"dockerd holds {tag} as {loaded['Id']}, not as the config digest {image_id}; "
                              f"dockerd said: {' | '.join(said)[-500:]}; remove the tag (`docker rmi`) and build again")
    return loaded


def _image_id(client: Any, image: str) -> str:
    """The id of `image` in dockerd, or "" when dockerd does not have it (the build then says why)."""
    import docker.errors

    try:
        return client.api.inspect_image(image)["Id"]
    except docker.errors.ImageNotFound:
        return ""


def build_app_image(client: Any, source_dir: Path, release: Release, model_file: Path, manifest_file: Path,
                    committed_at: datetime, repo_url: str, wheels_dir: Path, tag: str, base_image: str,
                    nocache: bool = False, dockerfile: str = "Dockerfile", code_stage: str = CODE_STAGE,
                    model_dir: str = oci.MODEL_MOUNT, load: bool = True) -> BuiltImage:
    """Builds the code image with dockerd, adds the model layer, and tags the result `tag` in dockerd.

    Args:
        source_dir: the checked-out app (its Dockerfile with the code stage aiship.toml names).
        release: the app, git SHA and model the image carries (its labels).
        model_file, manifest_file: the fetched, verified model; its layer is written beside it.
        committed_at: the commit's time: the image's `created`, so rebuilding gives the same image.
        wheels_dir: the dependencies' wheels, prepared on the host (`flows.wheels`).
        tag: `<registry>/<app>:<gitsha12>-<model>-v<version>` (`Release.image_tag`).
        nocache: rebuild the code image without dockerd's layer cache.
        dockerfile, code_stage, model_dir: from the app's aiship.toml.
        load: give dockerd the whole image (`docker load`); without it dockerd holds the code image
            only, and the image exists as its config and layers until it is pushed
            (bench/model_change.py measures what that saves).
    """
    started = clock = time.monotonic()
    timings = []

    def lap(part: str) -> None:
        nonlocal clock
        now = time.monotonic()
        timings.append((part, round(now - clock, 3)))
        clock = now

    labels = image_labels(release, committed_at, repo_url)
    members = context_members(source_dir, wheels_dir, dockerfile, (code_stage,))
    code = code_tag(tag, release.git_sha)
    buildargs = {"BASE_IMAGE": base_image, "GIT_SHA": release.git_sha}
    inputs = code_inputs(members, wheels_dir, _image_id(client, base_image), buildargs, dockerfile, code_stage)
    known = None if nocache else known_code_image(client, code, inputs)
    if known is not None:
        progress = BuildProgress(image_id=known["Id"], tail=[f"{code} is built from these inputs already ({inputs[:19]})"])
    else:
        progress = run_build(client, members, code, {LABEL_CODE_INPUTS: inputs}, buildargs,
                             nocache=nocache, target=code_stage, dockerfile=dockerfile)
    lap("code image")
    layer = oci.write_model_layer(model_file, manifest_file, model_file.parent / LAYER_FILE, model_dir)
    files = tuple(oci.model_layer_files(model_file, manifest_file, model_dir))
    for _, path in files:
        path.chmod(0o644)  # as the layer has them: readable by whatever user the app runs as
    lap("model layer")
    code_image = client.api.inspect_image(progress.image_id)
    config = oci.image_config(code_image, labels, labels[LABEL_CREATED], layer)
    if load:
        loaded = load_image(client, config, tag, layer)
        lap("docker load")
    else:
        loaded = {"Id": oci.digest_of(config), "Size": int(code_image.get("Size", 0)) + layer.size}
    return BuiltImage(
        release=release, image_id=loaded["Id"], tag=tag, labels=labels, code_tag=code,
        code_image_id=progress.image_id, model_layer=layer, config=config,
        size_bytes=int(loaded.get("Size", 0)), seconds=round(time.monotonic() - started, 3),
        steps_cached=progress.cached, steps_run=tuple(progress.run_steps),
        build_log_tail=tuple(progress.tail[-10:]), timings=tuple(timings),
        loaded=load, model_files=files,
    )


def layer_steps(steps: tuple[str, ...] | list[str]) -> list[str]:
    """The steps among `steps` that write a file-system layer (RUN, COPY, ADD), not metadata."""
    return [s for s in steps if s.split(" : ", 1)[-1].split(" ", 1)[0].upper() in ("RUN", "COPY", "ADD")]


def layer_diff_ids(client: Any, image: str) -> list[str]:
    """The image's RootFS diff IDs, base first: two builds share a layer when they share its id."""
    return list(client.api.inspect_image(image)["RootFS"]["Layers"])


def summary_table(title: str, rows: list[tuple[str, str]]) -> Iterator[str]:
    """Lines of a markdown artifact: a heading, then a two-column table of (name, value) rows."""
    yield f"### {title}"
    yield ""
    yield "| | |"
    yield "|---|---|"
    for name, value in rows:
        yield f"| {name} | {value} |"


def iter_summary(built: BuiltImage) -> Iterator[str]:
    """Lines of the markdown build summary."""
    rebuilt = ", ".join(f"`{step.split(' : ', 1)[-1][:60]}`" for step in layer_steps(built.steps_run))
    yield from summary_table(f"Image build `{built.tag}`", [
        ("image id (config digest)", f"`{built.image_id}`"),
        ("git SHA", f"`{built.release.git_sha}`"),
        ("model", f"{built.release.model} (`{built.release.model.sha256[:12]}…`)"),
        ("model layer", f"`{built.model_layer.digest}`, {built.model_layer.size / 1e6:.1f} MB, uncompressed"),
        ("size", f"{built.size_bytes / 1e6:.1f} MB"),
        ("code image steps reused (cache) / run", f"{built.steps_cached} / {len(built.steps_run)}"),
        ("code layers rebuilt", rebuilt or "none"),
        ("seconds", f"{built.seconds:.1f}" + (" (" + ", ".join(f"{part} {s:.1f}" for part, s in built.timings) + ")"
                                               if built.timings else "")),
        ("digest", "after the push: the `image-push` artifact"),
    ])


# ---------------------------------------------------------------- the task


def requirement_files(source: SourceTree, config: AppConfig) -> list[Path]:
    """The files of aiship.toml's [build] requirements, refused when a link leads out of the repository."""
    paths = [source.path / rel for rel in config.build.requirements]
    for path in paths:
        if not inside(source.path, path):
            raise ImageBuildError(f"{path.relative_to(source.path)} of [build] requirements leads out of the repository "
                                  f"(to {path.resolve()}); commit the file itself")
    return paths


def docker_client() -> Any:
    """A Docker SDK client for the configured daemon, or ImageBuildError asking whether it runs."""
    import docker

    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as exc:  # the SDK raises several types for "no daemon"
        raise ImageBuildError(f"cannot reach dockerd ({exc}); is Docker running? `aiship local up docker`",
                              transient=is_transient(exc)) from exc
    return client


# Only a lost daemon connection or a timeout is retried; a failing Dockerfile step is an answer.
@task(name="build-image", retries=2, retry_delay_seconds=[5, 15], retry_condition_fn=retry_condition)
def build_image(release: Release, source: SourceTree, model: FetchedModel, config: AppConfig,
                settings: Settings) -> BuiltImage:
    """Builds the image of a release from its source tree and verified model, and publishes a build summary.

    Args:
        release: the app, git SHA and model the image carries.
        source: the checked-out app at the release's git SHA.
        model: the fetched, verified model the release names.
        config: the app's aiship.toml (Dockerfile, code stage, requirements, model folder).
        settings: aiship's settings (registry, base image, cache folder).

    Returns:
        The built image: id, tag, labels, size, seconds, steps reused vs run.
    """
    from prefect.artifacts import create_markdown_artifact

    from flows.wheels import prepare_wheels

    if (source.sha, model.ref.sha256) != (release.git_sha, release.model.sha256):
        raise ImageBuildError(f"release {release.version} names git {release.short_sha} and model sha256 "
                              f"{release.model.sha256[:12]}, but the build was given {source.short_sha} and "
                              f"{model.ref.sha256[:12]}; build from the release's own inputs")
    wheels = prepare_wheels(requirement_files(source, config), settings.cache_dir)
    client = docker_client()
    try:
        built = build_app_image(client, source.path, release, Path(model.path), Path(model.manifest_path),
                                source.committed_at, source.repo_url, wheels.path, release.image_tag(settings.registry_host),
                                settings.base_image, nocache=settings.build_nocache, dockerfile=config.build.dockerfile,
                                code_stage=config.build.code_stage, model_dir=config.model.dir,
                                load=settings.smoke_test_model == "load")
    finally:
        client.close()
    create_markdown_artifact(key=f"build-summary-{config.name}", markdown="\n".join(iter_summary(built)),
                             description="The app image built for this delivery")
    return built
