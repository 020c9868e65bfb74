"""Promoted (learned) checkpoint versions: where they live and which one serving loads.

``tinyfleet learn`` never writes into the installed package (it may be read-only). A promoted
version of a bundled checkpoint ``<stem>`` (e.g. ``maze.route-trm-11``) lives in the learned
directory::

    <learned dir>/<stem>/v1.safetensors, v1.json     the first promoted version and its card
    <learned dir>/<stem>/v2.safetensors, v2.json     ... each card names its parent
    <learned dir>/<stem>/CURRENT                     one line: the version served ("v2" or "bundled")

The rule serving follows: **the learned directory is ``$TINYFLEET_LEARNED_DIR``, else
``$XDG_DATA_HOME/tinyfleet/learned``, else ``~/.local/share/tinyfleet/learned``** (resolved in
the worker's own process; a Ray cluster's nodes read their own). For every bundled checkpoint it
serves, a worker loads ``<stem>/<CURRENT>`` when ``CURRENT`` names a version whose weights and
card exist, else the bundled file. ``CURRENT`` is replaced atomically, so a reader sees the old
version or the new one, never half of one; workers look at it between batches
(:class:`PointerWatch`) and a batch is always answered by one version.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinyfleet_core.errors import ConfigError

__all__ = [
    "BUNDLED",
    "PointerWatch",
    "VersionInfo",
    "current_version",
    "learned_dir",
    "list_versions",
    "read_version",
    "resolve",
    "set_current",
    "version_path",
]

BUNDLED = "bundled"
"""The name ``CURRENT`` holds (and Attempt.info reports) for the bundled checkpoint."""

_VERSION = re.compile(r"^v([1-9][0-9]{0,5})$")


def learned_dir(directory: str | Path | None = None) -> Path:
    """``directory``, else ``$TINYFLEET_LEARNED_DIR``, else ``$XDG_DATA_HOME/tinyfleet/learned``,
    else ``~/.local/share/tinyfleet/learned``."""
    if directory is not None:
        return Path(directory)
    env = os.environ.get("TINYFLEET_LEARNED_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "tinyfleet" / "learned"


def _stem_dir(stem: str, directory: str | Path | None) -> Path:
    if not stem or "/" in stem or "\\" in stem or stem.startswith("."):
        raise ConfigError(f"checkpoint stem {stem!r} cannot name a directory")
    return learned_dir(directory) / stem


def version_path(stem: str, version: str, directory: str | Path | None = None) -> Path:
    """``<learned dir>/<stem>/<version>.safetensors`` (its card is the ``.json`` beside it)."""
    if not _VERSION.match(version):
        raise ConfigError(f"checkpoint version {version!r} is not of the form v1, v2, ...")
    return _stem_dir(stem, directory) / f"{version}.safetensors"


def list_versions(stem: str, directory: str | Path | None = None) -> list[str]:
    """Promoted versions of ``stem`` that have weights and card, oldest first."""
    base = _stem_dir(stem, directory)
    found = []
    for p in base.glob("v*.safetensors") if base.is_dir() else []:
        m = _VERSION.match(p.stem)
        if m and p.with_suffix(".json").exists():
            found.append((int(m.group(1)), p.stem))
    return [v for _, v in sorted(found)]


def current_version(stem: str, directory: str | Path | None = None) -> str:
    """The version ``CURRENT`` names when its files exist, else ``"bundled"``."""
    pointer = _stem_dir(stem, directory) / "CURRENT"
    try:
        name = pointer.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return BUNDLED
    except OSError as e:
        raise ConfigError(f"cannot read {pointer} ({e}); fix its permissions or delete it") from None
    if name == BUNDLED or not _VERSION.match(name):
        return BUNDLED
    path = version_path(stem, name, directory)
    return name if path.exists() and path.with_suffix(".json").exists() else BUNDLED


def set_current(stem: str, version: str, directory: str | Path | None = None) -> None:
    """Point ``CURRENT`` at ``version`` (or ``"bundled"``), atomically."""
    if version != BUNDLED:
        path = version_path(stem, version, directory)
        if not path.exists() or not path.with_suffix(".json").exists():
            raise ConfigError(f"version {version} of {stem} has no weights and card in {path.parent}")
    base = _stem_dir(stem, directory)
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".CURRENT.{os.getpid()}.tmp"
    tmp.write_text(version + "\n")
    os.replace(tmp, base / "CURRENT")


def resolve(bundled: Path, directory: str | Path | None = None) -> tuple[Path, str]:
    """(the file to load, its version) for the bundled checkpoint ``bundled``: the promoted
    version ``CURRENT`` names, else the bundled file itself and ``"bundled"``."""
    stem = bundled.name.removesuffix(".safetensors")
    version = current_version(stem, directory)
    if version == BUNDLED:
        return bundled, BUNDLED
    return version_path(stem, version, directory), version


@dataclass(frozen=True)
class VersionInfo:
    """One promoted version as its card describes it."""

    version: str
    parent: str
    path: Path
    card: dict[str, Any]


def read_version(stem: str, version: str, directory: str | Path | None = None) -> VersionInfo:
    """A promoted version's card (ConfigError when it is missing or unreadable)."""
    path = version_path(stem, version, directory)
    try:
        card = json.loads(path.with_suffix(".json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"model card of {stem} {version} in {path.parent} cannot be read ({e})") from None
    learned = card.get("learned") or {}
    return VersionInfo(version, str(learned.get("parent", BUNDLED)), path, card)


class PointerWatch:
    """Tells a worker, between batches, whether a ``CURRENT`` pointer it serves from has changed.

    One ``stat`` per watched pointer, at most every ``every_s`` seconds."""

    EVERY_S = 0.5

    def __init__(self, stems: list[str], directory: str | Path | None = None, every_s: float = EVERY_S) -> None:
        self.directory = learned_dir(directory)
        self.every_s = every_s
        self._last_check = 0.0
        self._seen = {s: self._stamp(s) for s in stems}

    def _stamp(self, stem: str) -> tuple[float, int] | None:
        try:
            st = (self.directory / stem / "CURRENT").stat()
        except OSError:
            return None
        return (st.st_mtime, st.st_ino)

    def changed(self, now: float) -> list[str]:
        """Stems whose pointer changed since the last call that reported them."""
        if now - self._last_check < self.every_s:
            return []
        self._last_check = now
        out = []
        for stem, seen in self._seen.items():
            stamp = self._stamp(stem)
            if stamp != seen:
                self._seen[stem] = stamp
                out.append(stem)
        return out
