"""A release: one commit of one app with one model version, from the model's fetch to its rollout.

`Release` is what goes into an image: the app, the git SHA, the model (name, version, sha256) and
the app's [serve] facts at that commit. `PinnedRelease` is the same release once pushed: its image
named by digest, which is all a rollout accepts. The image's OCI labels and the Kubernetes
annotations that say what serves are written here and read back here, so they always name the
same fields the same way.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from flows.app_config import AppName, ServeSection
from flows.errors import ImageBuildError, RolloutError

# OCI labels of the image (`org.opencontainers.image.*` are the standard's own keys).
LABEL_MODEL_NAME = "io.aiship.model.name"
LABEL_MODEL_VERSION = "io.aiship.model.version"
LABEL_MODEL_SHA256 = "io.aiship.model.sha256"
LABEL_REVISION = "org.opencontainers.image.revision"
LABEL_CREATED = "org.opencontainers.image.created"
LABEL_SOURCE = "org.opencontainers.image.source"
LABEL_VERSION = "org.opencontainers.image.version"

# Annotations of the Deployment and its pod template: what serves, read back by status, promote, rollback.
ANNOTATION_PREFIX = "io.aiship/"
APP = "io.aiship/app"
GIT_SHA = "io.aiship/git-sha"
MODEL_NAME = "io.aiship/model-name"
MODEL_VERSION = "io.aiship/model-version"
MODEL_SHA256 = "io.aiship/model-sha256"
DIGEST = "io.aiship/digest"
SERVE = "io.aiship/serve"  # the app's [serve] facts as JSON: promote and rollback reach the app as it was delivered

_SHA256 = re.compile(r"[0-9a-f]{64}")
_GIT_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # SHA-1 or SHA-256 object names


def _hex(pattern: re.Pattern[str], what: str):
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"{what} must be {pattern.pattern} (lower-case hex), got {value!r}")
        return value
    return check


Sha256 = Annotated[str, AfterValidator(_hex(_SHA256, "a sha256"))]
GitSha = Annotated[str, AfterValidator(_hex(_GIT_SHA, "a full git commit SHA"))]


def require_pinned(ref: str) -> str:
    """Returns `ref` when it names an image by digest (`repo@sha256:…`), else raises RolloutError."""
    if not isinstance(ref, str) or "@sha256:" not in ref or not _SHA256.fullmatch(ref.rsplit("@sha256:", 1)[1]):
        raise RolloutError(
            "ImageNotPinned",
            f"image reference {ref!r} is not pinned by digest: expected repo@sha256:<64 hex>; "
            "roll out the reference the push reported (PushedImage.ref), never a tag",
        )
    return ref


class ModelId(BaseModel):
    """A model version as a release names it: name, version and the sha256 of its file."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: int = Field(ge=0)  # a release read back from a Deployment that did not record it has 0
    sha256: Sha256

    def identity(self) -> ModelId:
        """Just the model's identity (a `ModelRef` also carries where the store keeps it)."""
        return ModelId(name=self.name, version=self.version, sha256=self.sha256)

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


class Release(BaseModel):
    """What goes into one image: an app at a git SHA with a model version, and how the app is served."""

    model_config = ConfigDict(frozen=True)

    app: AppName
    git_sha: GitSha
    model: ModelId
    serve: ServeSection = ServeSection()

    @field_validator("model", mode="before")
    @classmethod
    def _identity_only(cls, value: object) -> object:
        return value.identity() if isinstance(value, ModelId) else value

    @property
    def short_sha(self) -> str:
        return self.git_sha[:12]

    @property
    def version(self) -> str:
        """`<gitsha12>-<model>-v<version>`: the image's tag and its OCI version label."""
        return f"{self.short_sha}-{self.model.name}-v{self.model.version}"

    def repository(self, registry: str) -> str:
        """`<registry>/<app>`: each app has its own image repository."""
        return f"{registry.rstrip('/')}/{self.app}"

    def image_tag(self, registry: str) -> str:
        """`<registry>/<app>:<version>`, refusing a model name that makes an invalid tag."""
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", self.version):
            raise ImageBuildError(f"image tag {self.version!r} is not a valid Docker tag; rename the model")
        return f"{self.repository(registry)}:{self.version}"

    def labels(self, created: str, source_url: str) -> dict[str, str]:
        """The image's OCI labels: `created` is the commit's time (RFC 3339), `source_url` has no credentials."""
        return {
            LABEL_REVISION: self.git_sha,
            LABEL_CREATED: created,
            LABEL_SOURCE: source_url,
            LABEL_VERSION: self.version,
            LABEL_MODEL_NAME: self.model.name,
            LABEL_MODEL_VERSION: str(self.model.version),
            LABEL_MODEL_SHA256: self.model.sha256,
        }

    def built_by(self, labels: dict[str, str]) -> bool:
        """True when an image's labels name this release's git SHA and model sha256: it need not be built again."""
        return labels.get(LABEL_REVISION) == self.git_sha and labels.get(LABEL_MODEL_SHA256) == self.model.sha256

    def pinned(self, ref: str) -> PinnedRelease:
        """This release pushed as `ref` (`repo@sha256:…`)."""
        return PinnedRelease(ref=ref, **{name: getattr(self, name) for name in Release.model_fields})


class PinnedRelease(Release):
    """A release pushed: its image by digest. The only thing a rollout takes."""

    ref: str  # repo@sha256:<64 hex>

    @field_validator("ref")
    @classmethod
    def _pinned(cls, value: str) -> str:
        try:
            return require_pinned(value)
        except RolloutError as exc:
            raise ValueError(str(exc)) from None

    @property
    def digest(self) -> str:
        """`sha256:<64 hex>`, the part of the reference that pins the image."""
        return self.ref.rsplit("@", 1)[1]

    def annotations(self) -> dict[str, str]:
        """The pod template's `io.aiship/*` annotations (annotation values are strings)."""
        return {
            APP: self.app,
            GIT_SHA: self.git_sha,
            MODEL_NAME: self.model.name,
            MODEL_VERSION: str(self.model.version),
            MODEL_SHA256: self.model.sha256,
            DIGEST: self.digest,
            SERVE: self.serve.model_dump_json(),
        }

    @classmethod
    def from_annotations(cls, annotations: dict[str, str] | None, image: str, app: str) -> PinnedRelease:
        """The release a pod template's annotations and image name (`app` is the Deployment's name).

        A field the annotations do not hold reads as empty (the model's version as 0); the image
        must be pinned by digest, as every rollout of aiship's is.
        """
        require_pinned(image)
        ann = annotations or {}
        version = ann.get(MODEL_VERSION, "")
        fields = {"app": ann.get(APP) or app, "git_sha": ann.get(GIT_SHA, ""), "ref": image,
                  "model": {"name": ann.get(MODEL_NAME, ""), "version": int(version) if version.isdigit() else 0,
                            "sha256": ann.get(MODEL_SHA256, "")},
                  "serve": parse_serve(ann.get(SERVE))}
        # Written by aiship and read back as written; a Deployment from before a field existed lacks it.
        return cls.model_construct(**{**fields, "model": ModelId.model_construct(**fields["model"])})


def parse_serve(value: str | None) -> ServeSection:
    """The [serve] facts a release was rolled out with; a release from before they were recorded gets the defaults."""
    if not value:
        return ServeSection()
    try:
        return ServeSection.model_validate_json(value)
    except ValueError as exc:
        raise RolloutError("BadAnnotation", f"annotation {SERVE} is not valid ({exc}); deliver the app again") from exc
