"""The model store: models pulled from the Hugging Face Hub, kept under short names.

Every real user of an edge runtime starts by fetching a model (``ollama pull``, ``llama-cli -hf``),
so ``edge-llm pull REPO[:FILE_OR_QUANT]`` does it here. The Hub is spoken to through
huggingface_hub's HTTP session (so ``HF_ENDPOINT``, ``HF_TOKEN`` and its proxies work as
everywhere else), by ``edge_llm.hub``, which bounds every call (sizes, stalls, redirects, where the
token goes): every hub is treated as hostile. The listing (``/api/models/REPO?blobs=True``) gives
the files with their sizes and LFS SHA-256s, a HEAD on each file's resolve URL its location (and
size and SHA-256 where the listing has none), and a GET its bytes. We do not call
``hf_hub_download`` because that one throws a partial file away on failure: here the bytes go to
``.partial/<sha256>`` in the store and a second pull (after a Ctrl-C, a dropped connection, a
reboot) asks for the rest with an HTTP Range. A file is kept only when its SHA-256 equals the
hub's, and lands with an atomic rename; only then is it registered. A hub that gives no checksum
(some self-hosted mirrors) is said so once; the file is registered as unverified beside the
SHA-256 computed here, and ``--require-checksum`` refuses it. Every name the hub lists is checked
(no absolute paths, no ``..``, no control characters) before anything is fetched.

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

from edge_llm import hub
from edge_llm.errors import EdgeLLMError, ModelNotFoundError
from edge_llm.fsutil import atomic_path, cache_dir, sha256_file
from edge_llm.hub import DownloadError

__all__ = ["DownloadError", "StoreEntry", "entries", "find", "plan_pull", "pull", "remove"]

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
_REF = re.compile(
    r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9_][\w.-]*)(?::(?P<sel>[^\s:]+))?$", re.ASCII
)
# A commit (or branch) name the listing gives: used in URLs and a staging folder's name.
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_PREFIXES = ("hf://", "hf.co/", "huggingface.co/", "https://huggingface.co/")
DEFAULT_QUANT = "Q4_K_M"


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
    # True: every file matched the hub's checksum; False: the hub gave none for some (sha256 is
    # then only what was computed here); None: pulled before edge-llm recorded it
    verified: bool | None = None

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
    known = set(StoreEntry.__dataclass_fields__)
    for d in data.get("models", []):
        d = {k: v for k, v in d.items() if k in known}
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
    if not m or ".." in m["repo"]:
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


def human_size(n: int | None) -> str:
    """A size as the messages show it; None (nobody said) is "size unknown", never 0."""
    if n is None:
        return "size unknown"
    if n >= 2**20:
        return f"{n / 2**20:.1f} MiB"
    return f"{n / 2**10:.0f} KiB" if n >= 2**10 else f"{n} B"


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


def where() -> str:
    """The endpoint as messages show it: no credentials, no query."""
    return hub.public(endpoint())


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
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            raise hf_errors.OfflineModeIsEnabled("offline")
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
            f"no repository {repo} on {where()} (a private one needs HF_TOKEN); check the name"
        ) from None
    except hf_errors.RevisionNotFoundError:
        raise ModelNotFoundError(f"{repo} has no such revision on {where()}") from None
    except hf_errors.RemoteEntryNotFoundError:
        raise ModelNotFoundError(
            f"{repo} has no file {what or '(as listed)'} on {where()}; run `edge-llm pull {repo}` to see its files"
        ) from None
    except hf_errors.HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else "an error"
        try:
            who = hub.host(str(e.response.request.url))
        except (AttributeError, RuntimeError):  # no response, or one without its request
            who = where()
        raise DownloadError(
            f"{who} answered {status} for {repo}{' ' + what if what else ''}; try again later",
            resumable=status == 429 or (isinstance(status, int) and status >= 500),
        ) from None
    except Exception as e:  # the HTTP client's transport errors (httpx, httpx2, requests)
        if type(e).__module__.split(".")[0] in ("httpx", "httpx2", "requests", "urllib3"):
            detail = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DownloadError(
                f"cannot reach {where()} ({detail}); check the network, HF_ENDPOINT or a proxy, "
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
    """The commit and files of ``repo`` at its main revision, with sizes and checksums (as
    ``HfApi.model_info(files_metadata=True)`` asks for them), every field checked."""
    url = f"{endpoint()}/api/models/{repo}?blobs=True"
    with _hub_errors(repo):
        data = hub.get_json(url, home=endpoint(), what=f"the listing of {repo}")
    return _parse_listing(repo, data)


def _parse_listing(repo: str, data: Any) -> tuple[str, list[_RemoteFile]]:
    def bad(why: str) -> DownloadError:
        return DownloadError(
            f"the listing of {repo} from {where()} is malformed ({why}); refusing it"
        )

    if not isinstance(data, dict):
        raise bad("not a JSON object")
    revision = data.get("sha") or "main"
    if not isinstance(revision, str) or not _REVISION.match(revision):
        raise bad(f"commit {_shown(revision)}")
    siblings = data.get("siblings") or []
    if not isinstance(siblings, list):
        raise bad("'siblings' is not a list")
    files = []
    for s in siblings:
        if not isinstance(s, dict) or not isinstance(s.get("rfilename"), str):
            raise bad("a file without a name")
        name = check_file_name(repo, s["rfilename"])
        lfs = s.get("lfs")
        if lfs is not None and not isinstance(lfs, dict):
            raise bad(f"'lfs' of {name}")
        size = (lfs or s).get("size")
        sha256 = lfs.get("sha256") if lfs else None
        blob_id = s.get("blobId")
        if size is not None and (type(size) is not int or size < 0):
            raise bad(f"size {_shown(size)} of {name}")
        if sha256 is not None and not (isinstance(sha256, str) and _HEX64.match(sha256)):
            raise bad(f"SHA-256 {_shown(sha256)} of {name}")
        if blob_id is not None and not (isinstance(blob_id, str) and _HEX40.match(blob_id)):
            raise bad(f"blobId {_shown(blob_id)} of {name}")
        # a size of 0 is what some mirrors list for files they do not measure: unknown
        files.append(_RemoteFile(name, size or None, sha256, blob_id))
    return revision, files


def check_file_name(repo: str, name: str) -> str:
    """``name`` if it is a path inside a repository (relative, its own folders only, no ``.``
    or ``..``, no backslash or control character); a DownloadError otherwise."""
    parts = name.split("/")
    if (
        not name
        or len(name) > 1000
        or any(p in ("", ".", "..") for p in parts)
        or "\\" in name
        or re.match(r"^[A-Za-z]:", name)
        or any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in name)
    ):
        raise DownloadError(
            f"{where()} lists a file named {_shown(name)} in {repo}, which is not a path inside a "
            "repository; refusing the listing (nothing was downloaded)"
        )
    return name


def _shown(value: Any) -> str:
    """A hostile value as a message may quote it: escaped, at most 80 characters."""
    text = value if isinstance(value, str) else json.dumps(value)[:200]
    text = text.encode("unicode_escape").decode("ascii")
    return f"'{text[:77]}...'" if len(text) > 80 else f"'{text}'"


def _git_blob_sha1(path: Path) -> str:
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class _Resolved:
    """A listed file, located: where its bytes are, its size and its checksums, as far as the
    listing and the HEAD on its resolve URL tell them."""

    file: _RemoteFile
    url: str
    size: int | None
    sha256: str | None  # the listing's, else an ETag that is a SHA-256 (the Hub's LFS files)
    blob_id: str | None  # the listing's git blob SHA-1 (small files)

    @property
    def verifiable(self) -> bool:
        return bool(self.sha256 or self.blob_id)


def _resolve(repo: str, revision: str, f: _RemoteFile) -> _Resolved:
    from huggingface_hub import hf_hub_url

    url = hf_hub_url(repo, f.name, revision=revision, endpoint=endpoint())
    with _hub_errors(repo, f.name):
        meta = hub.head(url, home=endpoint())
    sha256 = f.sha256 or (None if f.blob_id else hub.sha256_etag(meta.etag))
    return _Resolved(f, meta.location, f.size or meta.size or None, sha256, f.blob_id)


def _download(
    repo: str, revision: str, r: _Resolved, dest: Path, say: Callable[[str], None]
) -> None:
    """Fetch one file to ``dest`` (atomically), resuming a partial download, checking its hash
    when the hub gave one. A refusal (not a broken connection) deletes the partial file."""
    f = r.file
    key = (
        r.sha256 or r.blob_id or hashlib.sha256(f"{repo}/{revision}/{f.name}".encode()).hexdigest()
    )
    partial = models_dir() / ".partial" / key
    partial.parent.mkdir(parents=True, exist_ok=True)
    have = partial.stat().st_size if partial.exists() else 0
    if r.size is not None and have > r.size:
        partial.unlink()
        have = 0
    if have:
        of = f" of {human_size(r.size)}" if r.size is not None else ""
        say(f"resuming {f.name} at {human_size(have)}{of}")
    job = hub.Fetch(r.url, f.name, r.size, endpoint(), say)
    try:
        with _hub_errors(repo, f.name), partial.open("ab") as out:
            hub.download(job, out, have)
        _verify(repo, r, partial)
    except DownloadError as e:
        if not e.resumable:
            partial.unlink(missing_ok=True)
        raise
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, dest)


def _verify(repo: str, r: _Resolved, partial: Path) -> None:
    name = r.file.name
    if r.sha256:
        got = sha256_file(partial)
        if got != r.sha256:
            raise DownloadError(
                f"{name} from {repo} failed its SHA-256 check (got {got[:12]}..., the hub gives "
                f"{r.sha256[:12]}...); it was deleted and nothing was registered; pull again"
            )
    elif r.blob_id and _git_blob_sha1(partial) != r.blob_id:
        raise DownloadError(
            f"{name} from {repo} does not match the hub's checksum; it was deleted and nothing "
            "was registered; pull again"
        )


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
            "bytes": g.size,
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
        "bytes": None if any(f.size is None for f in ckpt) else sum(f.size for f in ckpt),
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
    require_checksum: bool = False,
) -> StoreEntry:
    """Fetch ``ref`` (REPO[:FILE_OR_QUANT]) into the store and register it.

    A GGUF repository gives the chosen file; a safetensors repository is converted by
    ``converter(src_dir, out_path, **convert_options)`` (the ``convert`` package's ``convert``).
    ``require_checksum``: refuse, before downloading, files the hub gives no checksum for.
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
    resolved = [_resolve(repo, revision, f) for f in plan["files"]]
    verified = _checksums(repo, resolved, require_checksum, say)
    if plan["kind"] == "gguf":
        (r,) = resolved
        say(f"pulling {repo}/{r.file.name} ({human_size(r.size)}) from {where()}")
        _download(repo, revision, r, target, say)
    else:
        _pull_checkpoint(repo, revision, resolved, target, converter, opts, say)
    files = tuple(r.file.name for r in resolved)
    quant = _file_type(target) or label or "?"
    checked = resolved[0].sha256 if plan["kind"] == "gguf" else None
    entry = StoreEntry(
        name=entry_name,
        source=f"{repo}:{files[0] if plan['kind'] == 'gguf' else (label or quant)}",
        repo=repo,
        revision=revision,
        files=files,
        quant=quant,
        size=target.stat().st_size,
        # a downloaded GGUF was just checked against the hub's SHA-256: no second pass over it
        sha256=checked or sha256_file(target),
        converted=plan["kind"] == "checkpoint",
        pulled_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        verified=verified,
    )
    _save([e for e in entries() if e.name != entry.name] + [entry])
    return entry


def _checksums(
    repo: str, resolved: list[_Resolved], require: bool, say: Callable[[str], None]
) -> bool:
    """Whether every file can be checked; says so once when not, refuses with ``require``."""
    missing = [r.file.name for r in resolved if not r.verifiable]
    if not missing:
        return True
    names = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    if require:
        raise DownloadError(
            f"{where()} gives no checksum for {names} of {repo} and --require-checksum is set; "
            "nothing was downloaded"
        )
    say(
        f"unverified: {where()} gives no checksum for {names}: it is stored unverified, with "
        "the SHA-256 computed here (`edge-llm models` shows it; --require-checksum refuses it)"
    )
    return False


def _pull_checkpoint(repo, revision, resolved, target, converter, opts, say) -> None:
    """Download a safetensors checkpoint into a staging folder, convert it to ``target``."""
    # the folder is named as the repository, whose name the converter records (general.name)
    stage_root = models_dir() / ".staging" / f"{repo.replace('/', '--')}@{revision}"
    stage = stage_root / repo.split("/")[-1]
    sizes = [r.size for r in resolved]
    total = None if None in sizes else sum(sizes)
    say(f"pulling {repo} ({len(resolved)} files, {human_size(total)}) from {where()}")
    try:
        for r in resolved:
            if not (stage / r.file.name).is_file():
                _download(repo, revision, r, stage / r.file.name, say)
        say(f"converting {repo} to GGUF ({', '.join(f'{k}={v}' for k, v in opts.items() if v)})")
        tmp = target.parent / f".{target.stem}.converting.gguf"  # written atomically by it
        tmp.unlink(missing_ok=True)
        try:
            converter(stage, tmp, **opts)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    except DownloadError as e:
        if not e.resumable:  # a lying hub: nothing of it is kept
            shutil.rmtree(stage_root, ignore_errors=True)
        raise
    except EdgeLLMError:  # the converter refused the checkpoint
        shutil.rmtree(stage_root, ignore_errors=True)
        raise
    shutil.rmtree(stage_root, ignore_errors=True)


def _file_type(path: Path) -> str | None:
    from edge_llm import gguf_info

    try:
        return gguf_info.read(path).summary()["file_type"]
    except EdgeLLMError:
        return None
