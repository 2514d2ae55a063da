"""aiship's errors: one base class and one subclass per stage, each message naming the next step."""

from collections.abc import Iterator


def chain(exc: BaseException, context: bool = True) -> Iterator[BaseException]:
    """`exc` and the errors it was raised from (`raise ... from`), and with `context` those it was raised while handling."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (current.__context__ if context else None)


class AishipError(Exception):
    """Raised for every failure aiship explains to its user.

    `transient` says whether the same operation may succeed later (the part it needed did not
    answer); `flows.retry.is_transient` reads it and nothing else, so an aiship error is retried
    only when the code that raised it said so.
    """

    transient: bool = False

    def __init__(self, *args: object, transient: bool = False) -> None:
        super().__init__(*args)
        self.transient = transient


class ConfigurationError(AishipError):
    """Raised when a setting, block or parameter is missing or malformed."""


class PlatformError(AishipError):
    """Raised when a part of the local platform cannot be installed, started or reached."""


class AppTestError(AishipError):
    """Raised when the app's own test suite fails at the requested git ref."""


class ModelStoreError(AishipError):
    """Raised when the model store refuses a request or holds no such model or version."""


class ModelNotFoundError(ModelStoreError):
    """Raised when a model name or version is not published in the store."""


class MalformedManifestError(ModelStoreError):
    """Raised when a stored manifest is not valid, too large, or names another model or version than its key."""


class ModelIntegrityError(AishipError):
    """Raised when a model file's size or sha256 differs from its manifest, or its content is unsafe."""


class ImageBuildError(AishipError):
    """Raised when the Docker build of the app image fails."""


class SmokeTestError(AishipError):
    """Raised when the built container fails its health, version or golden-set checks."""


class ImagePushError(AishipError):
    """Raised when the registry refuses or loses the image push."""


class RolloutError(AishipError):
    """Raised when a rollout fails; carries a reason token and what was restored."""

    def __init__(self, reason: str, message: str, details: str = "") -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.details = details

    def __reduce__(self):
        # Prefect pickles a failed task's exception; the default reduce would call __init__ with one argument
        return (type(self), (self.reason, self.message, self.details))
