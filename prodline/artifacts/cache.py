"""A worker's bundles: fetched once per digest, and proven against the digest at every use.

Steps run as the worker's user, so anything the worker keeps on disk a step can
change (``chmod -R u+w`` undoes any read-only mode): the check scripts of an
application's bundle, another service's code. The cache therefore keeps no tree
that is trusted because it exists. It keeps the canonical tar of each bundle,
and every use reads that tar through SHA-256 while using it, so the bytes that
were hashed are the bytes that were used (no window between a check and a use):

* :meth:`BundleCache.checkout` extracts the tar into an attempt's own folder,
  hashing as it goes; the checkout is handed out only if the whole file hashed
  to the digest. If it did not (the cached copy was edited), the folder is
  emptied, the copy thrown away and the bundle fetched again from the store,
  verified before it is kept;
* :meth:`BundleCache.read` returns one file's bytes out of the tar, the same way
  (the resolve activity reads the service file so).

Layout under the cache root (``$PRODLINE_CACHE_DIR/bundles``, else
``~/.cache/prodline/bundles``):

* ``<hex>.tar`` -- the canonical tar of bundle ``sha256:<hex>``, as the store holds
  it; it appears by an atomic rename once a download hashed to the digest;
* ``.incoming/`` -- downloads in progress (a crashed one is cleared by the next fetch
  of the same digest, or by :func:`sweep`);
* ``.locks/<hex>.lock`` -- an ``fcntl`` lock per digest, so that two activities on one
  worker (threads or processes) fetch a bundle once between them.

Extraction trusts nothing in the archive, digest or not (whoever can write the
store can forge one): tarfile's ``data`` filter plus checks of our own -- only
files and symbolic links, canonical relative names (no ``/`` at the start, no
``..``), no duplicates, nothing below a link, links relative and inside, checked
again on the finished tree. A bundle whose true bytes fail them is refused and
not kept.

Each checkout is a full, writable extraction: steps write into their folder
(``terraform init`` makes ``.terraform/``) and may append to files in place, so
nothing may be shared between attempts. Not done: a size cap on the cache
(nothing is evicted; delete ``*.tar`` to reclaim space), and protecting a running
attempt's own folder from another step running at the same time on the same
worker (only running steps as another user, or in a sandbox, could).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import hashlib
import io
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO, NoReturn, TypeVar

from prodline.config.release import BundleRef
from prodline.errors import ProdlineError

from .bundle import bundle_key
from .store import ArtifactCorrupt, ArtifactMissing, ArtifactStore

CACHE_VARIABLE = "PRODLINE_CACHE_DIR"
_CHUNK = 1 << 20
# A cached copy found edited is fetched again; one that keeps failing while being read is being
# rewritten as we read it, by something on this worker: give up rather than loop.
_ROUNDS = 4  # the first use, then up to three fetches
T = TypeVar("T")
# How many symbolic links :meth:`BundleCache.read` follows to reach a regular file.
_MAX_LINKS = 8
_HEX = re.compile(r"[0-9a-f]{64}")


class BundleCorrupt(ProdlineError):
    """The stored bundle is not what its digest names, or not safe to extract: retrying cannot help."""


class NotInBundle(BundleCorrupt):
    """The bundle has no regular file at that path. A :class:`BundleCorrupt` because it is as final:
    the bundle is named by its content, so no retry gives it the file."""


def default_root() -> Path:
    base = os.environ.get(CACHE_VARIABLE)
    return Path(base) / "bundles" if base else Path.home() / ".cache" / "prodline" / "bundles"


class BundleCache:
    def __init__(self, store: ArtifactStore, root: Path | None = None):
        self.store = store
        self.root = root if root is not None else default_root()

    def checkout(self, ref: BundleRef, into: Path) -> Path:
        """Extract ``ref`` into ``into`` (absent or empty), writable, for one activity attempt.

        Returns only once every byte extracted was proven against the digest.
        """
        into.mkdir(parents=True, exist_ok=True)
        if any(into.iterdir()):
            raise FileExistsError(errno.EEXIST, "a bundle checkout needs an empty folder", str(into))
        try:
            self._use(ref, lambda f: _extract(f, into), lambda: _empty(into))
        except BaseException:
            _empty(into)
            raise
        return into

    def read(self, ref: BundleRef, path: str) -> bytes:
        """The bytes of the regular file ``path`` (relative, ``/``-separated) in ``ref``.

        Symbolic links inside the bundle are followed, as a step's checkout would.
        Raises :class:`NotInBundle` if there is no such file.
        """
        wanted = posixpath.normpath(path)
        if wanted.startswith("/") or wanted in (".", "..") or wanted.startswith("../"):
            raise NotInBundle(f"{path!r} is not a path inside bundle {ref.digest}")
        for _ in range(_MAX_LINKS + 1):
            kind, value = self._use(ref, lambda f, name=wanted: _find(f, name), lambda: None)
            if kind == "file":
                return value
            if kind == "missing":
                raise NotInBundle(f"bundle {ref.digest} has no file {path!r}")
            wanted = value.decode()  # a link inside the bundle (checked when the archive was read)
        raise NotInBundle(f"{path!r} in bundle {ref.digest} is a chain of more than {_MAX_LINKS} symbolic links")

    def tree(self, ref: BundleRef) -> Path:
        """TRANSITIONAL, for activities/resolve.py until it calls :meth:`read`: a fresh, verified
        checkout of ``ref`` of its own, never shared, removed when the process exits (or by the
        next worker's sweep). Not for steps: they use :meth:`checkout`. Remove with its last caller.
        """
        parent = self.root / "attempts"
        parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        into = Path(tempfile.mkdtemp(prefix=f"tree-{ref.short}-", dir=parent))
        atexit.register(remove_tree, into)
        return self.checkout(ref, into)

    def fetch(self, ref: BundleRef) -> Path:
        """The cached canonical tar of ``ref``, fetched and verified if absent (a worker's warm-up).

        The path is no promise about its content later: read it only through
        :meth:`checkout` or :meth:`read`.
        """
        path = self._archive(ref)
        if not path.is_file():
            self._refetch(ref, None)
        return path

    # --- each use proves the bytes it uses ------------------------------------------------

    def _use(self, ref: BundleRef, consume: Callable[[_Hashing], T], reset: Callable[[], None]) -> T:
        """``consume(reader)`` on the cached tar, kept only if the bytes it read hashed to the digest.

        An edited copy is thrown away (``reset`` undoes what ``consume`` did) and the bundle
        fetched again from the store. ``consume`` raises :class:`_Unsafe` for an archive it
        refuses; that counts only if the bytes are the bundle's own (then the bundle is bad).
        """
        path = self._archive(ref)
        bad: os.stat_result | None = None
        for round_ in range(_ROUNDS):
            if round_:
                self._refetch(ref, bad)  # missing, or edited since it was verified: never used
            try:
                f = path.open("rb")
            except FileNotFoundError:
                bad = None
                continue
            with f:
                bad = os.fstat(f.fileno())
                if bad.st_size != ref.size:  # told apart without hashing
                    continue
                reader = _Hashing(f, ref.size)
                try:
                    result = consume(reader)
                except (_Unsafe, tarfile.TarError, OSError) as exc:
                    reader.drain()
                    if reader.proven(ref):  # the bundle's own bytes fail: the bundle is bad (or the disk is)
                        self._refuse(ref, bad, exc)
                    reset()
                    continue
                reader.drain()
                if reader.proven(ref):
                    return result
                reset()
        raise BundleCorrupt(
            f"the cached copy of bundle {ref.digest} at {path} changed while it was being read, again and again: "
            "something on this worker is writing into its bundle cache (a step?); it was not used"
        )

    def _refuse(self, ref: BundleRef, cached: os.stat_result, exc: BaseException) -> NoReturn:
        if isinstance(exc, OSError):
            raise exc  # the bundle is fine, this worker's disk is not (full, say): the attempt is retried
        self._discard(ref, cached)
        reason = exc if isinstance(exc, _Unsafe) else f"it cannot be extracted: {exc}"
        raise BundleCorrupt(
            f"bundle {ref.digest} in {self._where(ref)} is refused: {reason}; `prodline release start` "
            "never packs such a bundle, so the object was put there by other means: delete it"
        )

    def _archive(self, ref: BundleRef) -> Path:
        return self.root / f"{ref.digest.removeprefix('sha256:')}.tar"

    def _refetch(self, ref: BundleRef, bad: os.stat_result | None) -> None:
        """Fetch and verify ``ref`` into the cache, replacing the copy ``bad`` unless that is gone."""
        hexdigest = ref.digest.removeprefix("sha256:")
        target = self._archive(ref)
        for folder in (self.root, self.root / ".locks", self.root / ".incoming"):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _locked(self.root / ".locks" / f"{hexdigest}.lock"):
            with contextlib.suppress(FileNotFoundError):
                now = os.stat(target)
                if bad is None or not os.path.samestat(now, bad):
                    return  # another activity fetched it while this one waited (or replaced the bad one)
                target.unlink()
            for stale in (self.root / ".incoming").glob(f"{hexdigest}.*"):
                remove_tree(stale)  # left by a fetch that crashed: the lock says nobody is on it
            fd, name = tempfile.mkstemp(prefix=f"{hexdigest}.", suffix=".tar", dir=self.root / ".incoming")
            os.close(fd)
            download = Path(name)
            try:
                self._download(ref, download)
                _verify(download, ref, self._where(ref))
                download.chmod(0o444)  # no protection (a step can chmod it back), a hint to people
                download.rename(target)
            finally:
                download.unlink(missing_ok=True)

    def _discard(self, ref: BundleRef, bad: os.stat_result) -> None:
        """Remove the cached copy ``bad`` of a bundle found unsafe (unless it was replaced meanwhile)."""
        hexdigest = ref.digest.removeprefix("sha256:")
        with _locked(self.root / ".locks" / f"{hexdigest}.lock"), contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.stat(self._archive(ref)), bad):
                self._archive(ref).unlink()

    def _download(self, ref: BundleRef, archive: Path) -> None:
        try:
            self.store.get_to_file(bundle_key(ref), archive)
        except ArtifactMissing:
            raise ArtifactMissing(
                f"bundle {ref.digest} is not in {self._where(ref)}: the release was started against another "
                "artifact store; PRODLINE_ARTIFACTS must name the same store for the CLI and every worker"
            ) from None
        except ArtifactCorrupt as exc:  # the store's own checksum caught it before we could
            raise BundleCorrupt(
                f"bundle {ref.digest} in {self._where(ref)} is corrupt: {exc}; delete the object and start the "
                "release again to upload it anew"
            ) from None

    def _where(self, ref: BundleRef) -> str:
        return f"{self.store.describe()} (key {bundle_key(ref)})"


def sweep(root: Path | None = None, max_age: timedelta = timedelta(hours=6)) -> int:
    """Remove what dead fetches and older versions left in the cache; the number of entries removed.

    Downloads in ``.incoming/`` older than ``max_age`` whose digest nobody is
    fetching (its lock is free), and the extracted trees (``<hex>/``) of the cache's
    previous layout, which nothing reads any more.
    """
    root = root if root is not None else default_root()
    removed = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(root):
            if _HEX.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                remove_tree(Path(entry.path))
                removed += 1
    cutoff = time.time() - max_age.total_seconds()
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(root / ".incoming"):
            hexdigest = entry.name.split(".", 1)[0]
            if entry.stat(follow_symlinks=False).st_mtime >= cutoff or not _HEX.fullmatch(hexdigest):
                continue
            with _locked(root / ".locks" / f"{hexdigest}.lock", wait=False) as mine:
                if mine:
                    remove_tree(Path(entry.path))
                    removed += 1
    return removed


@contextlib.contextmanager
def _locked(path: Path, wait: bool = True) -> Iterator[bool]:
    """Hold ``path``'s lock; with ``wait=False`` yield False at once if someone else holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:  # released when the descriptor closes, even if the process dies
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


# --- hash while reading ----------------------------------------------------------------------


class _Hashing:
    """A file read through SHA-256, never past ``limit`` bytes (an edited copy may have grown).

    Read-only and forward-only, as tarfile's stream mode reads it."""

    def __init__(self, f: BinaryIO, limit: int):
        self.f, self.left, self.sha = f, limit, hashlib.sha256()
        self.position = 0
        self.overrun = False

    def read(self, size: int = -1, /) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        data = self.f.read(size) if size else b""
        self.sha.update(data)
        self.left -= len(data)
        self.position += len(data)
        return data

    def tell(self) -> int:
        return self.position

    def write(self, b: bytes, /) -> int:
        raise io.UnsupportedOperation("read-only")

    def seek(self, pos: int, /) -> int:
        raise io.UnsupportedOperation("forward reads only")

    def close(self) -> None:
        pass  # the caller closes the file

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass
        self.overrun = bool(self.f.read(1))

    def proven(self, ref: BundleRef) -> bool:
        return not self.left and not self.overrun and "sha256:" + self.sha.hexdigest() == ref.digest


def _verify(archive: Path, ref: BundleRef, where: str) -> None:
    fix = "the stored object was changed or damaged: delete it and start the release again to upload it anew"
    size = archive.stat().st_size
    if size != ref.size:
        raise BundleCorrupt(f"bundle {ref.digest} in {where} is corrupt: it is {size:,} bytes, not {ref.size:,}; {fix}")
    with archive.open("rb") as f:
        got = "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
    if got != ref.digest:
        raise BundleCorrupt(f"bundle {ref.digest} in {where} is corrupt: its content hashes to {got}; {fix}")


# --- extract and read --------------------------------------------------------------------------


class _Unsafe(Exception):
    pass


def _stream(reader: _Hashing) -> tarfile.TarFile:
    # Stream mode ("r|"): one sequential pass, so every byte goes through the hash once.
    return tarfile.open(fileobj=reader, mode="r|", bufsize=_CHUNK)


def _fresh_files(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """The ``data`` filter, and no bundle times (all zero): files are dated by their checkout."""
    # mtime None: tarfile's utime() leaves the time alone (typeshed types mtime as float only).
    return tarfile.data_filter(member, dest).replace(mtime=None, deep=False)  # pyright: ignore[reportArgumentType]


def _extract(reader: _Hashing, dest: Path) -> None:
    """Extract the archive, refusing any entry `prodline release start` would never have packed."""
    seen: dict[str, bool] = {}  # name -> is a link
    with _stream(reader) as tar:
        for member in tar:
            _check_member(member, seen)
            tar.extract(member, dest, filter=_fresh_files)
    _check_links(dest, [name for name, link in seen.items() if link])


def _find(reader: _Hashing, name: str) -> tuple[str, bytes]:
    """Look for ``name`` while checking every entry: ("file", bytes), ("link", target) or ("missing", b"")."""
    found: tuple[str, bytes] = ("missing", b"")
    with _stream(reader) as tar:
        seen: dict[str, bool] = {}
        for member in tar:
            _check_member(member, seen)
            if member.name != name:
                continue
            if member.issym():
                target = posixpath.normpath(posixpath.join(posixpath.dirname(name), member.linkname))
                found = ("link", target.encode())
            else:
                data = tar.extractfile(member)
                assert data is not None  # a regular file: _check_member let only those and links through
                found = ("file", data.read())
    return found


def _check_member(member: tarfile.TarInfo, seen: dict[str, bool]) -> None:
    name = member.name
    if name.startswith("/") or name in ("", ".", "..") or posixpath.normpath(name) != name or name.startswith("../"):
        raise _Unsafe(f"entry {name!r} is not a plain relative path inside the bundle")
    if name in seen:
        raise _Unsafe(f"entry {name!r} appears twice")
    parent = posixpath.dirname(name)
    while parent:
        if seen.get(parent):
            raise _Unsafe(f"entry {name!r} lies below the symbolic link {parent!r}")
        parent = posixpath.dirname(parent)
    if set(member.pax_headers) - {"path", "linkpath"} or member.sparse is not None:
        raise _Unsafe(f"entry {name!r} carries PAX headers or sparse data no bundle has")
    if member.issym():
        target = posixpath.normpath(posixpath.join(posixpath.dirname(name), member.linkname))
        if member.linkname.startswith("/") or target == ".." or target.startswith("../"):
            raise _Unsafe(f"symbolic link {name!r} -> {member.linkname!r} leaves the bundle")
    elif not member.isreg():
        raise _Unsafe(f"entry {name!r} is not a file or a symbolic link")
    seen[name] = member.issym()


def _check_links(tree: Path, links: list[str]) -> None:
    """Each link must resolve inside the finished tree, through other links too (each is inside on
    paper, together they may leave). No entry lies below a link, so the links are all there is."""
    real_root = Path(os.path.realpath(tree))
    for name in links:
        real = Path(os.path.realpath(tree / name))
        if real != real_root and real_root not in real.parents:
            raise _Unsafe(f"symbolic link {name!r} resolves outside the bundle")


def _empty(folder: Path) -> None:
    """Delete what is inside ``folder`` (read-only subfolders included), keeping the folder."""
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            remove_tree(Path(entry.path))


def remove_tree(path: Path) -> None:
    """Delete a tree, read-only folders included (a step may have made some so), or a file."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir() and not path.is_symlink():
        with contextlib.suppress(OSError):
            os.chmod(path, 0o700)
        for folder, dirs, _files in os.walk(path):
            for name in dirs:  # before os.walk lists them: a folder without read access is not listed
                sub = os.path.join(folder, name)
                if not os.path.islink(sub):  # a link's target may be anywhere: leave it alone
                    with contextlib.suppress(OSError):
                        os.chmod(sub, 0o700)
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
