"""The model store in a folder: the default, for one machine or a shared filesystem."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from flows.errors import ModelNotFoundError
from flows.model_store.base import BaseModelStore

CHUNK = 1 << 20


class LocalModelStore(BaseModelStore):
    """Versions under `<root>/models/<name>/<version>/`; claims by exclusive create (O_EXCL)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalModelStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root / key

    def _prepare_for_write(self) -> None:
        (self.root / "models").mkdir(parents=True, exist_ok=True)

    def _create_exclusive(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return True

    def _put_file(self, key: str, path: Path) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        # copy to a temp name then rename, so no reader sees a half-written file
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, Path(path).open("rb") as src:
                shutil.copyfileobj(src, out, CHUNK)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ModelNotFoundError(f"{self._uri(key)} does not exist") from None

    def _iter_chunks(self, key: str) -> Iterator[bytes]:
        try:
            f = self._path(key).open("rb")
        except FileNotFoundError:
            raise ModelNotFoundError(f"{self._uri(key)} does not exist") from None
        with f:
            while block := f.read(CHUNK):
                yield block

    def _list_keys(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return [
            p.relative_to(self.root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        ]

    def _uri(self, key: str) -> str:
        return self._path(key).resolve().as_uri() if key else self.root.resolve().as_uri()
