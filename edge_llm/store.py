"""The model store: models pulled from the Hugging Face Hub, kept under short names.

Every real user of an edge runtime starts by fetching a model (``ollama pull``, ``llama-cli -hf``),
so ``edge-llm pull REPO[:FILE_OR_QUANT]`` does it here. The Hub is spoken to only through
``huggingface_hub`` (so ``HF_ENDPOINT``, ``HF_TOKEN`` and its proxies work as everywhere else):
``HfApi.model_info`` lists the repository's files with their sizes and LFS SHA-256s,
``get_hf_file_metadata`` resolves a file at the listed commit, and ``http_get`` streams it. We
call those pieces rather than ``hf_hub_download`` because that one throws a partial file away on
failure: here the bytes go to ``.partial/<sha256>`` in the store and a second pull (after a
Ctrl-C, a dropped connection, a reboot) asks for the rest with an HTTP Range. A file is kept only
when its SHA-256 equals the Hub's, and lands with an atomic rename; only then is it registered.

A safetensors repository is downloaded the same way into a staging folder and handed to a
converter (the ``convert`` package's ``convert``, supplied by the CLI: this runtime package never
imports ``convert``), whose output lands in the store like a downloaded GGUF.

Layout, under ``$EDGE_LLM_HOME`` or ``~/.cache/edge-llm``::

    models/NAME.gguf           one file per registered model
    models/store.json          the registry: name -> source, quant, size, sha256, path
    models/.partial/SHA256     downloads in progress (resumed by the next pull)
    models/.staging/...        a safetensors checkpoint being downloaded, until converted
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge_llm.errors import EdgeLLMError, ModelNotFoundError
from edge_llm.fsutil import atomic_path, cache_dir, sha256_file

# Files of a safetensors checkpoint that the converter reads (root of the repository only).
_CHECKPOINT_FILES = re.compile(
    r"^(config\.json|generation_config\.json|tokenizer\.json|tokenizer_config\.json|"
    r"tokenizer\.model|special_tokens_map\.json|added_tokens\.json|vocab\.json|merges\.txt|"
    r"chat_template\.jinja|chat_template\.json|[^/]*\.safetensors|model\.safetensors\.index\.json)$"
)
# A quantization name inside a GGUF file name (Q4_K_M, IQ4_XS, Q8_0, BF16, ...).
_QUANT_IN_NAME = re.compile(
    r"(?i)(?:^|[._-])(I?Q\d(?:_[A-Z0-9]+)*|BF16|F16|F32|TQ\d_\d|MXFP4(?:_MOE)?)(?=\.gguf$|[._-])"
)
_REF = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?::(?P<sel>[^\s:]+))?$")
_PREFIXES = ("hf://", "hf.co/", "huggingface.co/", "https://huggingface.co/")
DEFAULT_QUANT = "Q4_K_M"
_CHUNK = 16 << 10


class DownloadError(EdgeLLMError):
    """The Hub could not be reached, or sent something other than what it listed."""

    exit_code = 1


@dataclass(frozen=True)
class StoreEntry:
    """One pulled model, as ``store.json`` records it."""

    name: str
    source: str  # "REPO:FILE" as pulled
    repo: str
    revision: str  # the commit the files came from
    files: tuple[str, ...]  # the repository files it was made of
    quant: str  # the GGUF's file type (Q4_K_M, F16, ...) or "mixed"
    size: int
    sha256: str  # of the stored GGUF
    converted: bool  # made from a safetensors checkpoint on pull
    pulled_at: str

    @property
    def path(self) -> Path:
        return models_dir() / f"{self.name}.gguf"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["files"] = list(self.files)
        d["path"] = str(self.path)
        return d


def models_dir() -> Path:
    return cache_dir() / "models"


def _registry_file() -> Path:
    return models_dir() / "store.json"


def entries() -> list[StoreEntry]:
    """Every pulled model, by name."""
    try:
        data = json.loads(_registry_file().read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as e:
        raise EdgeLLMError(
            f"the model store's registry {_registry_file()} is unreadable ({e}); fix or delete it"
        ) from None
    out = []
    for d in data.get("models", []):
        d = {k: v for k, v in d.items() if k != "path"}
        d["files"] = tuple(d.get("files", ()))
        out.append(StoreEntry(**d))
    return sorted(out, key=lambda e: e.name)


def _save(all_entries: list[StoreEntry]) -> None:
    models_dir().mkdir(parents=True, exist_ok=True)
    with atomic_path(_registry_file()) as tmp:
        tmp.write_text(
            json.dumps(
                {"models": [e.to_dict() for e in sorted(all_entries, key=lambda e: e.name)]},
                indent=2,
            )
            + "\n"
        )


def find(arg: str) -> StoreEntry | None:
    """The pulled model named ``arg``, or pulled from the reference ``arg`` (REPO[:SEL])."""
    key = arg.lower()
    es = entries()
    for e in es:
        if e.name == key:
            return e
    if not is_reference(arg):
        return None
    repo, sel = parse_reference(arg)
    for e in es:
        if e.repo.lower() != repo.lower():
            continue
        if sel is None or sel.lower() in (e.quant.lower(), *(f.lower() for f in e.files)):
            return e
    return None


def remove(name: str) -> StoreEntry:
    """Delete a pulled model's file and its registry entry."""
    es = entries()
    entry = next((e for e in es if e.name == name.lower()), None)
    if entry is None:
        known = ", ".join(e.name for e in es) or "none yet"
        raise ModelNotFoundError(f"no pulled model named '{name}' (pulled models: {known})")
    _save([e for e in es if e.name != entry.name])
    entry.path.unlink(missing_ok=True)
    return entry


# --- references ---------------------------------------------------------------------------------
def is_reference(arg: str) -> bool:
    """Whether ``arg`` reads as a Hub repository (owner/name, optionally :FILE_OR_QUANT)."""
    arg = _strip_prefix(arg)
    return bool(_REF.match(arg)) and not arg.lower().endswith(".gguf")


def parse_reference(arg: str) -> tuple[str, str | None]:
    m = _REF.match(_strip_prefix(arg))
    if not m:
        raise ModelNotFoundError(
            f"'{arg}' is not a Hub repository; write OWNER/NAME or OWNER/NAME:QUANT "
            "(e.g. bartowski/SmolLM2-135M-Instruct-GGUF:Q4_K_M)"
        )
    return m["repo"], m["sel"]


def _strip_prefix(arg: str) -> str:
    for p in _PREFIXES:
        if arg.startswith(p):
            return arg[len(p) :]
    return arg


def human_size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def quant_in_name(filename: str) -> str | None:
    found = _QUANT_IN_NAME.findall(Path(filename).name)
    return found[-1].upper() if found else None


def short_name(repo: str, quant: str | None) -> str:
    """``bartowski/SmolLM2-135M-Instruct-GGUF`` + Q4_K_M -> ``smollm2-135m-instruct-q4_k_m``."""
    base = re.sub(r"(?i)[-_.]gguf$", "", repo.split("/")[-1]).lower()
    if quant and not base.endswith(quant.lower()):
        base = f"{base}-{quant.lower()}"
    return re.sub(r"[^a-z0-9._-]+", "-", base).strip("-.")


# --- the Hub ------------------------------------------------------------------------------------
def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


@contextlib.contextmanager
def _hub_errors(repo: str, what: str = "") -> Iterator[None]:
    """huggingface_hub's exceptions as one-line EdgeLLMErrors."""
    try:
        import huggingface_hub.errors as hf_errors
    except ImportError:
        raise EdgeLLMError(
            "pulling models needs huggingface_hub: pip install 'huggingface_hub>=1.0'"
        ) from None
    try:
        yield
    except EdgeLLMError:
        raise
    except hf_errors.OfflineModeIsEnabled:
        raise DownloadError(
            "HF_HUB_OFFLINE is set, so the Hub cannot be asked; unset it to pull models"
        ) from None
    except hf_errors.GatedRepoError:
        raise DownloadError(
            f"{repo} is gated: accept its terms on the Hub, then set HF_TOKEN to a token that may read it"
        ) from None
    except hf_errors.RepositoryNotFoundError:
        raise ModelNotFoundError(
            f"no repository {repo} on {endpoint()} (a private one needs HF_TOKEN); check the name"
        ) from None
    except hf_errors.RevisionNotFoundError:
        raise ModelNotFoundError(f"{repo} has no such revision on {endpoint()}") from None
    except hf_errors.RemoteEntryNotFoundError:
        raise ModelNotFoundError(
            f"{repo} has no file {what or '(as listed)'} on {endpoint()}; run `edge-llm pull {repo}` to see its files"
        ) from None
    except hf_errors.HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else "an error"
        raise DownloadError(
            f"{endpoint()} answered {status} for {repo}{' ' + what if what else ''}; try again later"
        ) from None
    except Exception as e:  # the HTTP client's transport errors (httpx, httpx2, requests)
        if type(e).__module__.split(".")[0] in ("httpx", "httpx2", "requests", "urllib3"):
            detail = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DownloadError(
                f"cannot reach {endpoint()} ({detail}); check the network, HF_ENDPOINT or a proxy, "
                "then pull again (a partial download resumes)"
            ) from None
        raise


@dataclass(frozen=True)
class _RemoteFile:
    name: str
    size: int | None
    sha256: str | None  # LFS files
    blob_id: str | None  # git blob sha1, for small files


def _listing(repo: str) -> tuple[str, list[_RemoteFile]]:
    """The commit and files of ``repo`` at its main revision, with sizes and checksums."""
    from huggingface_hub import HfApi

    with _hub_errors(repo):
        info = HfApi(endpoint=endpoint()).model_info(repo, files_metadata=True)
    files = [
        _RemoteFile(
            s.rfilename,
            s.lfs.size if s.lfs else s.size,
            s.lfs.sha256 if s.lfs else None,
            s.blob_id,
        )
        for s in (info.siblings or [])
    ]
    return info.sha, files


def _git_blob_sha1(path: Path) -> str:
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _download(
    repo: str, revision: str, f: _RemoteFile, dest: Path, say: Callable[[str], None]
) -> None:
    """Fetch one file to ``dest`` (atomically), resuming a partial download, checking its hash."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    # http_get writes what it reads in blocks of this size: an interruption loses at most one
    # block of the partial download (its default, 10 MiB, would lose a small file entirely).
    constants.DOWNLOAD_CHUNK_SIZE = _CHUNK

    key = (
        f.sha256 or f.blob_id or hashlib.sha256(f"{repo}/{revision}/{f.name}".encode()).hexdigest()
    )
    partial = models_dir() / ".partial" / key
    partial.parent.mkdir(parents=True, exist_ok=True)
    url = hf_hub_url(repo, f.name, revision=revision, endpoint=endpoint())
    with _hub_errors(repo, f.name):
        meta = get_hf_file_metadata(url)
        size = meta.size if meta.size is not None else f.size
        have = partial.stat().st_size if partial.exists() else 0
        if size is not None and have > size:
            partial.unlink()
            have = 0
        if have:
            say(f"resuming {f.name} at {human_size(have)} of {human_size(size or 0)}")
        headers = build_hf_headers()
        headers["Accept-Encoding"] = "identity"  # byte ranges of the stored bytes
        with partial.open("ab") as out:
            try:
                http_get(
                    meta.location,
                    out,
                    resume_size=have,
                    headers=headers,
                    expected_size=size,
                    displayed_filename=f.name,
                )
            except OSError as e:
                if "Consistency check failed" in str(e):
                    raise DownloadError(
                        f"{f.name} arrived with the wrong size from {endpoint()}; pull again to resume"
                    ) from None
                raise
    if f.sha256:
        got = sha256_file(partial)
        if got != f.sha256:
            partial.unlink()
            raise DownloadError(
                f"{f.name} from {repo} failed its SHA-256 check (got {got[:12]}..., the Hub lists "
                f"{f.sha256[:12]}...); it was deleted and nothing was registered; pull again"
            )
    elif f.blob_id and _git_blob_sha1(partial) != f.blob_id:
        partial.unlink()
        raise DownloadError(
            f"{f.name} from {repo} does not match the Hub's checksum; it was deleted and nothing "
            "was registered; pull again"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, dest)


# --- pull ---------------------------------------------------------------------------------------
def _choose_gguf(repo: str, sel: str | None, ggufs: list[_RemoteFile]) -> _RemoteFile:
    main = [g for g in ggufs if not Path(g.name).name.lower().startswith("mmproj")]
    if sel is None:
        picked = (
            main if len(main) == 1 else [g for g in main if quant_in_name(g.name) == DEFAULT_QUANT]
        )
    elif sel.lower().endswith(".gguf"):
        picked = [g for g in ggufs if g.name == sel or Path(g.name).name == sel]
    else:
        picked = [g for g in main if quant_in_name(g.name) == sel.upper()]
    if len(picked) == 1:
        return picked[0]
    choices = ", ".join(sorted({quant_in_name(g.name) or g.name for g in main})) or "none"
    if not picked and sel is not None:
        raise ModelNotFoundError(f"{repo} has no GGUF file '{sel}'; it has: {choices}")
    if not picked:
        raise ModelNotFoundError(
            f"{repo} has {len(main)} GGUF files; pick one with {repo}:QUANT (one of {choices})"
        )
    if all(re.search(r"-\d{5}-of-\d{5}\.gguf$", g.name) for g in picked):
        raise ModelNotFoundError(
            f"{repo}:{sel} is split into {len(picked)} files, which edge-llm does not join yet; "
            "pick a single-file quantization"
        )
    names = ", ".join(g.name for g in picked)
    raise ModelNotFoundError(f"{repo}:{sel} matches several files ({names}); name one of them")


def plan_pull(ref: str) -> dict[str, Any]:
    """What ``pull(ref)`` would fetch: kind ("gguf" or "checkpoint"), files and total size."""
    repo, sel = parse_reference(ref)
    revision, files = _listing(repo)
    ggufs = [f for f in files if f.name.lower().endswith(".gguf")]
    if ggufs:
        g = _choose_gguf(repo, sel, ggufs)
        return {
            "repo": repo,
            "revision": revision,
            "kind": "gguf",
            "files": [g],
            "bytes": g.size or 0,
            "quant": quant_in_name(g.name),
        }
    ckpt = [f for f in files if "/" not in f.name and _CHECKPOINT_FILES.match(f.name)]
    if not any(f.name.endswith(".safetensors") for f in ckpt) or not any(
        f.name == "config.json" for f in ckpt
    ):
        raise ModelNotFoundError(
            f"{repo} holds neither GGUF files nor a safetensors checkpoint (config.json and "
            "*.safetensors); edge-llm can pull only those"
        )
    if sel is not None and not _is_type_name(sel):
        raise ModelNotFoundError(
            f"{repo} is a safetensors checkpoint; choose the GGUF type with --type (not ':{sel}')"
        )
    return {
        "repo": repo,
        "revision": revision,
        "kind": "checkpoint",
        "files": ckpt,
        "bytes": sum(f.size or 0 for f in ckpt),
        "quant": sel.upper() if sel else None,
    }


def _is_type_name(sel: str) -> bool:
    return bool(re.fullmatch(r"(?i)I?Q\d(_[A-Z0-9]+)*|BF16|F16|F32|TQ\d_\d", sel))


Converter = Callable[..., Any]


def pull(
    ref: str,
    *,
    name: str | None = None,
    converter: Converter | None = None,
    convert_options: dict[str, Any] | None = None,
    say: Callable[[str], None] | None = None,
    plan: dict[str, Any] | None = None,
) -> StoreEntry:
    """Fetch ``ref`` (REPO[:FILE_OR_QUANT]) into the store and register it.

    A GGUF repository gives the chosen file; a safetensors repository is converted by
    ``converter(src_dir, out_path, **convert_options)`` (the ``convert`` package's ``convert``).
    """
    say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
    plan = plan or plan_pull(ref)
    repo, revision = plan["repo"], plan["revision"]
    opts = dict(convert_options or {})
    if plan["kind"] == "checkpoint":
        if converter is None:
            raise EdgeLLMError(
                f"{repo} is a safetensors checkpoint: converting it needs the convert package "
                "(pip install 'edge-llm[convert]'), or pull a GGUF repository"
            )
        if plan["quant"] and not opts.get("type"):
            opts["type"] = plan["quant"]
        label = opts.get("type") or (
            "mixed" if opts.get("recipe") or opts.get("target_size") else None
        )
        if label is None:
            opts["type"] = label = DEFAULT_QUANT
    else:
        label = plan["quant"]
    entry_name = (name or short_name(repo, label)).lower()
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", entry_name):
        raise EdgeLLMError(f"model name '{entry_name}' must be letters, digits, '.', '_' or '-'")
    existing = next((e for e in entries() if e.name == entry_name), None)
    if existing is not None and existing.path.is_file():
        say(
            f"{entry_name} is already in the store ({existing.path}); `edge-llm rm {entry_name}` first to pull again"
        )
        return existing
    target = models_dir() / f"{entry_name}.gguf"
    models_dir().mkdir(parents=True, exist_ok=True)
    if plan["kind"] == "gguf":
        (f,) = plan["files"]
        say(f"pulling {repo}/{f.name} ({human_size(f.size or 0)}) from {endpoint()}")
        _download(repo, revision, f, target, say)
        files = (f.name,)
    else:
        # the folder is named as the repository, whose name the converter records (general.name)
        stage_root = models_dir() / ".staging" / f"{repo.replace('/', '--')}@{revision}"
        stage = stage_root / repo.split("/")[-1]
        total = plan["bytes"]
        say(f"pulling {repo} ({len(plan['files'])} files, {human_size(total)}) from {endpoint()}")
        for f in plan["files"]:
            if not (stage / f.name).is_file():
                _download(repo, revision, f, stage / f.name, say)
        say(f"converting {repo} to GGUF ({', '.join(f'{k}={v}' for k, v in opts.items() if v)})")
        tmp = models_dir() / f".{entry_name}.converting.gguf"  # the converter writes it atomically
        tmp.unlink(missing_ok=True)
        try:
            converter(stage, tmp, **opts)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        shutil.rmtree(stage_root, ignore_errors=True)
        files = tuple(f.name for f in plan["files"])
    quant = _file_type(target) or label or "?"
    entry = StoreEntry(
        name=entry_name,
        source=f"{repo}:{files[0] if plan['kind'] == 'gguf' else (label or quant)}",
        repo=repo,
        revision=revision,
        files=files,
        quant=quant,
        size=target.stat().st_size,
        # a downloaded GGUF was just checked against the Hub's SHA-256: no second pass over it
        sha256=(plan["files"][0].sha256 if plan["kind"] == "gguf" else None) or sha256_file(target),
        converted=plan["kind"] == "checkpoint",
        pulled_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    _save([e for e in entries() if e.name != entry.name] + [entry])
    return entry


def _file_type(path: Path) -> str | None:
    from edge_llm import gguf_info

    try:
        return gguf_info.read(path).summary()["file_type"]
    except EdgeLLMError:
        return None
