"""The server's file cache (``/v1/files``, go-judge's ``/file``): blobs in memory, by id.

Bounded by a count and a total size; when a new file would pass either bound, the least recently
used files are dropped first (a file larger than the whole bound is refused).  Thread-safe.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict


class FileTooLarge(Exception):
    """A file larger than the cache itself."""


class FileStore:
    """``max_files`` blobs, ``max_bytes`` in all."""

    def __init__(self, max_files: int = 1000, max_bytes: int = 256 << 20) -> None:
        self.max_files, self.max_bytes = max_files, max_bytes
        self._data: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def add(self, data: bytes, name: str = "") -> str:
        """Store ``data``; returns its new id.  Raises FileTooLarge."""
        if len(data) > self.max_bytes:
            raise FileTooLarge(f"{len(data)} bytes: the file cache holds at most {self.max_bytes}")
        fid = secrets.token_hex(8)
        with self._lock:
            while self._data and (len(self._data) >= self.max_files or self._size + len(data) > self.max_bytes):
                _, (_, old) = self._data.popitem(last=False)
                self._size -= len(old)
            self._data[fid] = (name, bytes(data))
            self._size += len(data)
        return fid

    def get(self, fid: str) -> bytes | None:
        with self._lock:
            item = self._data.get(fid)
            if item is None:
                return None
            self._data.move_to_end(fid)
            return item[1]

    def delete(self, fid: str) -> bool:
        with self._lock:
            item = self._data.pop(fid, None)
            if item is None:
                return False
            self._size -= len(item[1])
            return True

    def list(self) -> dict[str, str]:
        """id -> the name it was stored under."""
        with self._lock:
            return {k: v[0] for k, v in self._data.items()}

    def stats(self) -> dict:
        with self._lock:
            return {"files": len(self._data), "bytes": self._size, "max_files": self.max_files,
                    "max_bytes": self.max_bytes}
