"""Bounded HTTP to a model hub: whatever arrives over the network is treated as hostile.

Why: `edge-llm pull` talks to whatever ``HF_ENDPOINT`` names: the Hugging Face Hub, a
self-hosted mirror that omits sizes and checksums or ignores Range requests, or a server that
lies. huggingface_hub's helpers read a listing whole, read a body to its end before comparing its
size, retry a stalled transfer for minutes and send the caller's headers (the token) wherever
they are pointed. So the requests go through huggingface_hub's own HTTP session (its proxies and
transport) with the token it would send, and this module bounds each of them:

- a JSON answer (a listing) over ``EDGE_LLM_PULL_MAX_JSON`` bytes (32 MiB) is refused;
- a body longer than the size the hub announced is cut at the first byte too many, and one
  whose size nobody announced at ``EDGE_LLM_PULL_MAX_FILE`` bytes (64 GiB);
- a transfer that stalls (no data, or under 1 KiB, for ``EDGE_LLM_PULL_STALL_TIMEOUT`` seconds,
  60 by default) is cut; a listing (a JSON answer) must arrive within five times that;
- redirects are followed here, at most 5, and the token (``Authorization``, ``Cookie``) goes
  only to the endpoint's own origin (scheme, host, port): never to a CDN or any other host;
- messages name hosts, never a URL's credentials or query (a signed CDN URL is a credential).

Every failure is a `DownloadError` (one line, exit 2). ``resumable`` tells the caller whether
the partial file is worth keeping (a broken or stalled connection) or must go (a lying server).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import urljoin, urlsplit

from edge_llm.errors import EdgeLLMError

STALL_ENV = "EDGE_LLM_PULL_STALL_TIMEOUT"
MAX_JSON_ENV = "EDGE_LLM_PULL_MAX_JSON"
MAX_FILE_ENV = "EDGE_LLM_PULL_MAX_FILE"
MAX_REDIRECTS = 5
MIN_PROGRESS = 1024  # bytes per stall window: less is a stall (a trickle holds a pull forever)
_ERROR_BODY = 64 << 10  # bytes of an error answer read for its message
_SECRET_HEADERS = ("authorization", "cookie", "proxy-authorization")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class DownloadError(EdgeLLMError):
    """The hub could not be reached, or sent something other than what it announced."""

    def __init__(self, message: str, *, resumable: bool = False, retry: bool = False):
        super().__init__(message)
        self.resumable = resumable  # the partial download may be kept and resumed
        self.retry = retry  # a broken connection: worth resuming at once


@dataclass(frozen=True)
class Limits:
    stall_s: float = 60.0
    max_json: int = 32 << 20
    max_file: int = 64 << 30

    @property
    def deadline_s(self) -> float:
        """The longest a listing (a JSON answer) may take to arrive, all of it."""
        return 5 * self.stall_s


def limits() -> Limits:
    """The limits, from the environment where set (a test sets a short stall timeout)."""
    d = Limits()
    return Limits(
        stall_s=_env_number(STALL_ENV, d.stall_s, float),
        max_json=_env_number(MAX_JSON_ENV, d.max_json, int),
        max_file=_env_number(MAX_FILE_ENV, d.max_file, int),
    )


def _env_number(name: str, default, kind):
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = 0
    if not value > 0:
        raise EdgeLLMError(f"{name}={raw!r} must be a positive number; unset it for the default")
    return value


# --- URLs ---------------------------------------------------------------------------------------
def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def public(url: str) -> str:
    """``url`` as a message may show it: scheme, host, port and path; no credentials, no query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}".rstrip("/")


def host(url: str) -> str:
    """``url``'s origin as a message shows it (scheme, host, port)."""
    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
    return f"{parts.scheme}://{where}"


def sha256_etag(value: str | None) -> str | None:
    """An ETag that is a SHA-256 (the Hub's LFS files: the content's checksum), else None."""
    if not value:
        return None
    v = value.strip()
    v = v.removeprefix("W/").strip('"').lower()
    return v if _SHA256.match(v) else None


# --- requests -----------------------------------------------------------------------------------
def _session():
    """huggingface_hub's HTTP session and the httpx module it is built on (httpx or httpx2)."""
    from huggingface_hub.utils import get_session

    session = get_session()
    return session, sys.modules[type(session).__module__.split(".")[0]]


def hub_headers() -> dict[str, str]:
    """The token huggingface_hub would send (``HF_TOKEN`` or the saved login), a user agent,
    and a request for the stored bytes. Not ``build_hf_headers``: for its user agent, newer
    huggingface_hub versions fetch a registry from the endpoint, unbounded, on the side."""
    import huggingface_hub
    from huggingface_hub import constants, get_token

    from edge_llm import __version__

    headers = {
        "User-Agent": f"edge-llm/{__version__}; hf_hub/{huggingface_hub.__version__}",
        "Accept-Encoding": "identity",
    }
    token = None if getattr(constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", False) else get_token()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _for(url: str, home: str, headers: dict[str, str]) -> dict[str, str]:
    if origin(url) == origin(home):
        return dict(headers)
    return {k: v for k, v in headers.items() if k.lower() not in _SECRET_HEADERS}


@contextlib.contextmanager
def request(
    method: str,
    url: str,
    *,
    home: str,
    headers: dict[str, str],
    lim: Limits,
    follow: Callable[[str], bool] = lambda target: True,
) -> Iterator[Any]:
    """``method url`` as a streamed response. Redirects are followed while ``follow(target)``
    (at most `MAX_REDIRECTS`); the secret headers go only to ``home``'s origin. The response
    is the first one not followed: a redirect itself when ``follow`` said no."""
    session, httpx = _session()
    timeout = httpx.Timeout(lim.stall_s)
    at = [url]  # the URL now asked, for the messages
    with _transport_errors(at, lim, httpx):
        for _ in range(MAX_REDIRECTS + 1):
            with session.stream(
                method,
                at[0],
                headers=_for(at[0], home, headers),
                timeout=timeout,
                follow_redirects=False,
            ) as r:
                target = _redirect_target(at[0], r)
                if target is None or not follow(target):
                    yield r
                    return
            at[0] = target
    raise DownloadError(
        f"{host(url)} redirected more than {MAX_REDIRECTS} times; refusing to follow"
    )


def _redirect_target(url: str, r) -> str | None:
    if r.status_code not in (301, 302, 303, 307, 308) or "location" not in r.headers:
        return None
    target = urljoin(url, r.headers["location"])
    if urlsplit(target).scheme not in ("http", "https"):
        raise DownloadError(
            f"{host(url)} redirected to a {urlsplit(target).scheme!r} URL; refusing it"
        )
    return target


@contextlib.contextmanager
def _transport_errors(at: list[str], lim: Limits, httpx) -> Iterator[None]:
    """httpx's errors as one line each: a timeout is a stall, a broken connection resumable."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        yield
    except (HfHubHTTPError, httpx.HTTPStatusError):  # an answer, not a transport error
        raise
    except httpx.TimeoutException:
        raise DownloadError(
            f"{host(at[0])} stalled (no data for {lim.stall_s:g} s, {STALL_ENV}); "
            "pull again to resume",
            resumable=True,
        ) from None
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as e:
        raise DownloadError(
            f"the connection to {host(at[0])} broke ({_first_line(e)}); pull again to resume",
            resumable=True,
            retry=True,
        ) from None
    except httpx.HTTPError as e:
        raise DownloadError(
            f"cannot reach {host(at[0])} ({_first_line(e)}); check the network, HF_ENDPOINT or a "
            "proxy, then pull again (a partial download resumes)",
            resumable=True,
        ) from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    if not text:
        return type(e).__name__
    return re.sub(r"https?://\S+", lambda m: public(m[0]), text.splitlines()[0])[:200]


def raise_for_status(r) -> None:
    """An error answer as huggingface_hub's exception (the Hub's error codes), from at most
    64 KiB of its body."""
    if r.status_code < 400:
        return
    from huggingface_hub.utils import hf_raise_for_status

    body = b""
    for chunk in r.iter_bytes():
        body += chunk
        if len(body) >= _ERROR_BODY:
            break
    framing = ("content-encoding", "content-length", "transfer-encoding")
    headers = [(k, v) for k, v in r.headers.multi_items() if k.lower() not in framing]
    hf_raise_for_status(
        type(r)(r.status_code, headers=headers, content=body[:_ERROR_BODY], request=r.request)
    )


class _Pace:
    """Cuts a transfer that trickles: under `MIN_PROGRESS` bytes in a stall window, or (with a
    deadline) one that takes too long in all."""

    def __init__(self, lim: Limits, url: str, deadline: float | None = None):
        self.lim, self.url = lim, url
        self.mark = self.start = time.monotonic()
        self.bytes = 0
        self.deadline = deadline

    def add(self, n: int) -> None:
        now = time.monotonic()
        self.bytes += n
        if self.deadline is not None and now - self.start > self.deadline:
            raise DownloadError(
                f"{host(self.url)} took over {self.deadline:g} s to answer ({STALL_ENV} x 5); "
                "try again later"
            )
        if now - self.mark >= self.lim.stall_s:
            if self.bytes < MIN_PROGRESS:
                raise DownloadError(
                    f"{host(self.url)} stalled (under {MIN_PROGRESS} bytes in {self.lim.stall_s:g} s, "
                    f"{STALL_ENV}); pull again to resume",
                    resumable=True,
                )
            self.mark, self.bytes = now, 0


# --- the three kinds of call --------------------------------------------------------------------
def get_json(url: str, *, home: str, what: str, lim: Limits | None = None) -> Any:
    """GET ``url``'s JSON, refused past ``lim.max_json`` bytes or ``lim.deadline_s`` seconds."""
    lim = lim or limits()
    headers = hub_headers() | {"Accept": "application/json"}
    over = (
        f"{what} from {host(url)} is larger than {lim.max_json:,} bytes ({MAX_JSON_ENV}); "
        "refusing it"
    )
    with request("GET", url, home=home, headers=headers, lim=lim) as r:
        raise_for_status(r)
        if r.status_code != 200:
            raise DownloadError(f"{host(url)} answered {r.status_code} for {what}; try again later")
        if _int(r.headers.get("content-length"), 0) > lim.max_json:
            raise DownloadError(over)
        body, pace = bytearray(), _Pace(lim, url, lim.deadline_s)
        for chunk in r.iter_bytes():  # httpx's errors here: request's, as one line
            body += chunk
            pace.add(len(chunk))
            if len(body) > lim.max_json:
                raise DownloadError(over)
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise DownloadError(f"{what} from {host(url)} is not JSON; is HF_ENDPOINT a Hub?") from None


@dataclass(frozen=True)
class FileMeta:
    location: str  # where the bytes are (the resolve URL, or the CDN it redirects to)
    size: int | None
    etag: str | None


def head(url: str, *, home: str, lim: Limits | None = None) -> FileMeta:
    """A file's metadata from a HEAD on its resolve URL. Redirects within ``home``'s origin are
    followed; one to another host is not (as huggingface_hub does): the Hub puts the file's size
    and SHA-256 on the redirect itself (X-Linked-Size, X-Linked-Etag)."""
    lim = lim or limits()
    same = origin(home)
    with request(
        "HEAD", url, home=home, headers=hub_headers(), lim=lim, follow=lambda t: origin(t) == same
    ) as r:
        raise_for_status(r)
        target = _redirect_target(str(r.request.url), r)
        size = _int(r.headers.get("x-linked-size"))
        if size is None and target is None:
            size = _int(r.headers.get("content-length"))
        return FileMeta(
            location=target or str(r.request.url),
            size=size,
            etag=r.headers.get("x-linked-etag") or r.headers.get("etag"),
        )


def _int(value: str | None, default: int | None = None) -> int | None:
    if value is None or not value.strip().isdigit():
        return default
    return int(value)


@dataclass
class Fetch:
    """One file's download: where from, how much is already on disk, what was announced."""

    url: str
    name: str
    size: int | None  # announced (listing, else headers); None: unknown
    home: str
    say: Callable[[str], None]
    restarted: bool = False  # the server ignored a Range once (said once)


def download(job: Fetch, out: IO[bytes], have: int, lim: Limits | None = None) -> int:
    """Append ``job``'s bytes from ``have`` on to ``out``; returns the file's size.

    A broken connection that delivered something is resumed here (up to 5 times); a server that
    ignores Range is restarted from zero, said once. Cut, with a DownloadError, at the first byte
    past the announced size (or `Limits.max_file`) and on a stall."""
    lim = lim or limits()
    for attempt in range(6):
        before = have
        try:
            return _attempt(job, out, have, lim)
        except DownloadError as e:
            have = out.tell()
            if not e.retry or attempt == 5 or have <= before:
                raise
    raise AssertionError("unreachable")


def _attempt(job: Fetch, out: IO[bytes], have: int, lim: Limits) -> int:
    if job.size is not None and have == job.size:
        return have
    headers = hub_headers()
    if have:
        headers["Range"] = f"bytes={have}-"
    with request("GET", job.url, home=job.home, headers=headers, lim=lim) as r:
        raise_for_status(r)
        where = host(str(r.request.url))
        if have and r.status_code == 200:
            if not job.restarted:
                job.say(
                    f"{where} ignores Range requests: downloading {job.name} again from the start"
                )
                job.restarted = True
            out.seek(0)
            out.truncate()
            have = 0
        elif have and r.status_code == 206:
            _check_range(r, have, job, where)
        elif r.status_code != 200:
            raise DownloadError(f"{where} answered {r.status_code} for {job.name}; try again later")
        announced = _int(r.headers.get("content-length"))
        if job.size is None and announced is not None:
            job.size = have + announced
        elif announced is not None and have + announced != job.size:
            raise DownloadError(
                f"{where} sends {have + announced:,} bytes for {job.name}, announced as "
                f"{job.size:,}; refusing it (nothing was kept)"
            )
        cap = job.size if job.size is not None else lim.max_file
        pace = _Pace(lim, str(r.request.url))
        for chunk in r.iter_bytes():  # httpx's errors here: request's, as one line
            pace.add(len(chunk))
            if have + len(chunk) > cap:
                raise DownloadError(_too_long(job, where, cap, lim))
            out.write(chunk)
            have += len(chunk)
    out.flush()
    if job.size is not None and have < job.size:
        raise DownloadError(
            f"the connection to {where} closed after {have:,} of {job.size:,} bytes of "
            f"{job.name}; pull again to resume",
            resumable=True,
            retry=True,
        )
    return have


def _check_range(r, have: int, job: Fetch, where: str) -> None:
    m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", r.headers.get("content-range", "").strip())
    if not m or int(m[1]) != have:
        raise DownloadError(
            f"{where} answered a request for {job.name} from byte {have:,} with another range "
            f"({r.headers.get('content-range', 'none')[:60]}); refusing it (nothing was kept)"
        )
    if m[3] != "*":
        total = int(m[3])
        if job.size is None:
            job.size = total
        elif total != job.size:
            raise DownloadError(
                f"{where} says {job.name} has {total:,} bytes, announced as {job.size:,}; "
                "refusing it (nothing was kept)"
            )


def _too_long(job: Fetch, where: str, cap: int, lim: Limits) -> str:
    if cap == lim.max_file and job.size is None:
        return (
            f"{job.name} from {where} passed {cap:,} bytes with no size announced "
            f"({MAX_FILE_ENV}); cut and refused (nothing was kept)"
        )
    return (
        f"{job.name} from {where} is longer than the {cap:,} bytes announced; cut and refused "
        "(nothing was kept)"
    )
