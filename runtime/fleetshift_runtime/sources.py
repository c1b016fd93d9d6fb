"""Model sources: local paths, ``http(s)://`` and ``s3://``, plus safe ``model.tar.gz`` unpacking.

:func:`fetch_model_file` turns a URI into a local model file:

1. a local path (or ``file://``) is used in place; a folder is searched for the model;
2. a remote URI is downloaded once into the cache folder (a file lock makes concurrent
   workers share one download), retried with backoff and verified against an optional
   sha256;
3. a gzip'd tarball (SageMaker's ``model.tar.gz``) is unpacked with
   :func:`safe_unpack` and searched for ``xgboost-model`` (or another model file).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import ssl
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from .disk_budget import DiskSession
from .errors import ModelLoadError, ModelNotFoundError, NotAModelError
from .models.formats import find_model_file
from .s3 import S3Credentials, S3Location, resolve_endpoint, resolve_region, signed_get
from .settings import RuntimeSettings

log = logging.getLogger(__name__)

_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class SourceOptions:
    """What fetching needs from the settings."""

    cache_dir: Path
    max_download_bytes: int
    max_unpacked_bytes: int
    max_archive_members: int
    retries: int
    backoff_seconds: float
    timeout_seconds: float
    s3_endpoint_url: str = ""
    s3_region: str = ""
    s3_addressing_style: str = "auto"
    ca_bundle: str = ""


def source_options(settings: RuntimeSettings) -> SourceOptions:
    """The fetching part of the settings."""
    cache = Path(settings.cache_dir or Path(tempfile.gettempdir()) / "fleetshift-models")
    return SourceOptions(
        cache_dir=cache,
        max_download_bytes=settings.max_download_bytes,
        max_unpacked_bytes=settings.max_unpacked_bytes,
        max_archive_members=settings.max_archive_members,
        retries=settings.download_retries,
        backoff_seconds=settings.download_backoff_seconds,
        timeout_seconds=settings.download_timeout_seconds,
        s3_endpoint_url=settings.s3_endpoint_url,
        s3_region=settings.s3_region,
        s3_addressing_style=settings.s3_addressing_style,
        ca_bundle=settings.ca_bundle,
    )


class _RetryableError(Exception):
    """A download attempt failed in a way worth retrying."""


def is_remote(uri: str) -> bool:
    """True for ``http``, ``https`` and ``s3`` URIs.

    >>> [is_remote(u) for u in ("s3://b/k", "https://h/m", "/mnt/models", "file:///m")]
    [True, True, False, False]
    """
    return urlsplit(uri).scheme in ("http", "https", "s3")


def join_uri(prefix: str, relative: str) -> str:
    """Join a multi-model prefix and a target model name.

    >>> join_uri("s3://models/mme", "Chicago_IL/Chicago_IL.tar.gz")
    's3://models/mme/Chicago_IL/Chicago_IL.tar.gz'
    >>> join_uri("/mnt/models/", "a.ubj")
    '/mnt/models/a.ubj'
    """
    return prefix.rstrip("/") + "/" + relative.lstrip("/")


def local_path(uri: str) -> Path:
    """The filesystem path of a plain path or ``file://`` URI."""
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    return Path(uri)


def fetch_model_file(
    uri: str,
    options: SourceOptions,
    *,
    sha256: str = "",
    within: Path | None = None,
    session: DiskSession | None = None,
) -> Path:
    """Resolve a model URI to a local model file (downloading and unpacking as needed).

    With ``sha256`` the artifact is checked on every call, whether it was just
    downloaded, found in the cache or read in place: a cache never vouches for itself.
    Caches are keyed by content, never by path alone, so an artifact replaced in place
    is seen on the next load.

    With ``within`` (a multi-model prefix folder), a local artifact and the model file
    found in it must resolve inside that folder: links out of it are not followed.
    A folder that holds only a ``model.tar.gz`` is unpacked like the tarball itself.

    With ``session`` (multi-model mode's disk budget), every cache entry this fetch reads
    or writes is pinned until the session ends, room is made before a download, and a
    model whose entries alone exceed the budget is refused
    (:class:`~fleetshift_runtime.disk_budget.ModelTooLargeError`) before it is written.
    """
    if not uri:
        raise ModelLoadError("no model URI: set FLEETSHIFT_MODEL_URI")
    digest = ""
    if is_remote(uri):
        artifact, digest = _download_cached(uri, options, sha256, session)
    else:
        artifact = local_path(uri)
        if not artifact.exists():
            raise ModelNotFoundError(f"model path {artifact} does not exist")
        _check_within(artifact, within)
        if sha256:
            if not artifact.is_file():
                raise ModelLoadError(
                    f"FLEETSHIFT_MODEL_SHA256 is set but {artifact} is a folder; a digest "
                    "can only be checked for one file (point the URI at it, or unset the digest)"
                )
            digest = _verify_sha256(artifact, sha256)
    if artifact.is_dir():
        artifact = find_model_file(artifact)
        _check_within(artifact, within)
        if not _is_gzip(artifact):
            return artifact
    if _is_gzip(artifact):
        unpacked = options.cache_dir / "unpacked" / (digest or file_sha256(artifact))[:32]
        with _locked(unpacked.with_suffix(".lock")):
            if session is not None:
                session.claim(unpacked)
            if not (unpacked / ".complete").exists():
                _empty(unpacked)
                room = None
                if session is not None:
                    # the archive stays cached beside what it unpacks to (when downloaded)
                    stored = artifact.stat().st_size if is_remote(uri) else 0
                    room = (session, stored)
                _unpack(
                    artifact,
                    unpacked,
                    max_bytes=options.max_unpacked_bytes,
                    max_members=options.max_archive_members,
                    room=room,
                )
                (unpacked / ".complete").touch()
        return find_model_file(unpacked)
    return artifact


def _empty(folder: Path) -> None:
    """Remove what is in ``folder`` (a half-unpacked entry), keeping the folder itself:
    it may be pinned."""
    if not folder.is_dir():
        return
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _check_within(path: Path, root: Path | None) -> None:
    if root is not None and not path.resolve().is_relative_to(root.resolve()):
        raise NotAModelError(
            f"{path} resolves to {path.resolve()}, outside the model prefix {root}",
            public="it is a link out of the model prefix; links are followed only within it",
        )


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(2) == _GZIP_MAGIC


def _cache_key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's content."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify_sha256(path: Path, expected: str) -> str:
    found = file_sha256(path)
    if found != expected.lower():
        raise ModelLoadError(f"sha256 of {path.name} is {found}, expected {expected.lower()}")
    return found


def _download_cached(
    uri: str, options: SourceOptions, sha256: str, session: DiskSession | None = None
) -> tuple[Path, str]:
    """The downloaded artifact and its sha256 (empty when not computed).

    With a digest the cache is content-addressed: a cached copy is used without asking
    the source, after its digest is checked again. Without one, the source is asked on
    every load and its validators (ETag, Last-Modified, size) pick the cached copy; a
    source without validators is downloaded again.
    """
    name = PurePosixPath(urlsplit(uri).path).name or "artifact"
    folder = options.cache_dir / _cache_key(uri)
    with _locked(folder.with_suffix(".lock")):
        if sha256:
            pinned = folder / f"sha256-{sha256.lower()[:32]}" / name
            if session is not None:
                session.claim(pinned.parent)
            if pinned.exists():
                if file_sha256(pinned) == sha256.lower():
                    return pinned, sha256.lower()
                log.warning("cached %s fails its sha256; downloading it again", _redact(uri))
                pinned.unlink()
            return _download_with_retries(
                uri, folder, name, options, sha256=sha256, pinned=pinned, session=session
            ), sha256
        return _download_with_retries(
            uri, folder, name, options, sha256="", pinned=None, session=session
        ), ""


def _download_with_retries(
    uri: str,
    folder: Path,
    name: str,
    options: SourceOptions,
    *,
    sha256: str,
    pinned: Path | None,
    session: DiskSession | None = None,
) -> Path:
    delay = options.backoff_seconds
    attempts = options.retries + 1
    for attempt in range(1, attempts + 1):
        try:
            return _download_once(
                uri, folder, name, options, sha256=sha256, pinned=pinned, session=session
            )
        except _RetryableError as error:
            if attempt == attempts:
                raise ModelLoadError(
                    f"downloading {_redact(uri)} failed after {attempts} attempts: {error}"
                ) from error
            log.warning(
                "download attempt %d/%d of %s failed (%s); retrying in %.1fs",
                attempt,
                attempts,
                _redact(uri),
                error,
                delay,
            )
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover


def _redact(uri: str) -> str:
    parts = urlsplit(uri)
    return parts._replace(query="", fragment="").geturl()


def _request_for(uri: str, options: SourceOptions) -> tuple[str, dict[str, str]]:
    if uri.startswith("s3://"):
        return signed_get(
            S3Location.parse(uri),
            endpoint=resolve_endpoint(options.s3_endpoint_url),
            region=resolve_region(options.s3_region),
            credentials=S3Credentials.from_env(),
            addressing_style=options.s3_addressing_style,
        )
    return uri, {}


def _ssl_context(options: SourceOptions) -> ssl.SSLContext | bool:
    if not options.ca_bundle:
        return True
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=options.ca_bundle)
    return context


def _version_key(headers: Mapping[str, str]) -> str:
    """A cache folder name from the object's validators, or "" when it has none."""
    etag = headers.get("etag", "")
    modified = headers.get("last-modified", "")
    if not etag and not modified:
        return ""
    return "v-" + _cache_key(f"{etag}\0{modified}\0{headers.get('content-length', '')}")


def _download_once(
    uri: str,
    folder: Path,
    name: str,
    options: SourceOptions,
    *,
    sha256: str,
    pinned: Path | None,
    session: DiskSession | None = None,
) -> Path:
    import httpx  # noqa: PLC0415 - ~50 ms of start-up that only remote models need

    url, headers = _request_for(uri, options)
    digest = hashlib.sha256()
    received = 0
    folder.mkdir(parents=True, exist_ok=True)
    fd, partial_name = tempfile.mkstemp(dir=folder, prefix=".partial-")
    partial = Path(partial_name)
    try:
        with (
            os.fdopen(fd, "wb") as out,
            httpx.Client(
                timeout=options.timeout_seconds,
                verify=_ssl_context(options),
                follow_redirects=True,
                trust_env=False,
            ) as client,
            client.stream("GET", url, headers=headers) as response,
        ):
            if response.status_code in _RETRY_STATUSES:
                raise _RetryableError(f"HTTP {response.status_code}")
            if response.status_code == 404:
                raise ModelNotFoundError(f"{_redact(uri)} does not exist (HTTP 404)")
            if response.status_code != 200:
                body = response.read()[:300].decode(errors="replace")
                raise ModelLoadError(
                    f"downloading {_redact(uri)} failed with HTTP {response.status_code}: {body}"
                )
            version = _version_key(response.headers)
            if pinned is None and version:
                if session is not None:
                    session.claim(folder / version)
                if (folder / version / name).exists():
                    return folder / version / name  # the source still holds this very object
            declared = int(response.headers.get("content-length", "0") or 0)
            if declared > options.max_download_bytes:
                raise ModelLoadError(
                    f"{_redact(uri)} is {declared} bytes, over the limit of "
                    f"{options.max_download_bytes} (FLEETSHIFT_MAX_DOWNLOAD_BYTES)"
                )
            if session is not None:
                session.check_fits(declared)
                session.make_room(declared)
            for chunk in response.iter_bytes(1 << 20):
                received += len(chunk)
                if received > options.max_download_bytes:
                    raise ModelLoadError(
                        f"{_redact(uri)} exceeds the download limit of "
                        f"{options.max_download_bytes} bytes"
                    )
                if session is not None:
                    session.check_fits(received, at_least=True)
                digest.update(chunk)
                out.write(chunk)
            if declared and received != declared:
                raise _RetryableError(f"truncated: got {received} of {declared} bytes")
        if sha256 and digest.hexdigest() != sha256.lower():
            raise _RetryableError(
                f"sha256 mismatch: got {digest.hexdigest()}, expected {sha256.lower()}"
            )
        target = pinned or folder / (version or "sha256-" + digest.hexdigest()[:32]) / name
        if session is not None:
            session.claim(target.parent)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial.replace(target)
        return target
    except httpx.TransportError as error:
        raise _RetryableError(f"{type(error).__name__}: {error}") from error
    finally:
        partial.unlink(missing_ok=True)


def safe_unpack(archive: Path, destination: Path, *, max_bytes: int, max_members: int) -> None:
    """Extract a (gzip'd) tarball, refusing anything that could escape or explode.

    Refused: absolute paths, ``..`` components, links, devices and FIFOs, more than
    ``max_members`` entries, or more than ``max_bytes`` in total. Everything is
    checked before a single byte is written.
    """
    _unpack(archive, destination, max_bytes=max_bytes, max_members=max_members, room=None)


def _unpack(
    archive: Path,
    destination: Path,
    *,
    max_bytes: int,
    max_members: int,
    room: tuple[DiskSession, int] | None,
) -> None:
    """:func:`safe_unpack`; with ``room`` (a disk budget's session and the bytes the model
    already holds in the cache), the unpacked size plus those bytes must fit the budget,
    and room is made for it before a byte is written."""
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            members: list[tarfile.TarInfo] = []
            total = 0
            for member in tar:
                if len(members) >= max_members:
                    raise ModelLoadError(
                        f"{archive.name} has more than {max_members} entries "
                        "(FLEETSHIFT_MAX_ARCHIVE_MEMBERS)"
                    )
                _check_member(archive.name, member)
                total += member.size if member.isfile() else 0
                if total > max_bytes:
                    raise ModelLoadError(
                        f"{archive.name} unpacks to more than {max_bytes} bytes "
                        "(FLEETSHIFT_MAX_UNPACKED_BYTES)"
                    )
                members.append(member)
            if room is not None:
                session, stored = room
                session.check_fits(stored + total)
                session.make_room(total)
            destination.mkdir(parents=True, exist_ok=True)
            root = destination.resolve()
            for member in members:
                target = (root / member.name).resolve()
                if not target.is_relative_to(root):
                    raise ModelLoadError(f"{archive.name}: {member.name!r} escapes the folder")
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                if source is None:  # pragma: no cover - regular files always have data
                    continue
                with source, target.open("wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise ModelLoadError(f"{archive.name} is not a readable tar archive: {error}") from error


def _check_member(archive: str, member: tarfile.TarInfo) -> None:
    name = member.name
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith(("/", "\\")):
        raise ModelLoadError(f"{archive}: entry {name!r} has an absolute path")
    if ".." in path.parts:
        raise ModelLoadError(f"{archive}: entry {name!r} climbs out with '..'")
    if member.issym() or member.islnk():
        raise ModelLoadError(f"{archive}: entry {name!r} is a link; links are not extracted")
    if not (member.isfile() or member.isdir()):
        raise ModelLoadError(f"{archive}: entry {name!r} is not a regular file or folder")
