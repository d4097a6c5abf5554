"""A worker's bundles: fetched once per digest, and proven against the digest at every use.

Steps run as the worker's user, so anything the worker keeps on disk a step can
change (``chmod -R u+w`` undoes any read-only mode): the check scripts of an
application's bundle, another service's code. The cache therefore keeps no tree
that is trusted because it exists. It keeps the canonical tar of each bundle,
and every use reads that file once into memory, hashes those bytes and, if they
are the bundle's, uses those very bytes: no window between a check and a use,
whatever happens to the file meanwhile.

* :meth:`BundleCache.checkout` extracts them into an attempt's own folder;
* :meth:`BundleCache.read` returns one file's bytes (the resolve activity reads the
  service file so).

A cached copy that does not hash to the digest (edited since it was verified) is
thrown away and the bundle fetched again from the store, verified before it is
kept; what was edited is never used. A bundle is at most the packing limit (100 MB
by default), so holding it in memory for one use is affordable.

Layout under the cache root (``$PRODLINE_CACHE_DIR/bundles``, else
``~/.cache/prodline/bundles``):

* ``<hex>.tar`` -- the canonical tar of bundle ``sha256:<hex>``, as the store holds
  it; it appears by an atomic rename once a download hashed to the digest;
* ``.incoming/`` -- downloads in progress (a crashed one is cleared by the next fetch
  of the same digest, or by :func:`sweep`);
* ``.locks/<hex>.lock`` -- an ``fcntl`` lock per digest, so that two activities on one
  worker (threads or processes) fetch a bundle once between them.

Extraction trusts nothing in the archive, digest or not (whoever can write the
store can forge one): checks of our own on every entry before anything is written
-- only files and symbolic links, canonical relative names (no ``/`` at the start,
no ``..``), no duplicates, nothing below a link or a file, links relative and
inside -- then tarfile's ``data`` filter, then the links again on the finished
tree. A bundle whose true bytes fail them is refused and not kept.

Each checkout is a full, writable extraction: steps write into their folder
(``terraform init`` makes ``.terraform/``) and may append to files in place, so
nothing may be shared between attempts. Not done: a size cap on the cache
(nothing is evicted; delete ``*.tar`` to reclaim space), and protecting a running
attempt's own folder from another step running at the same time on the same
worker (only running steps as another user, or in a sandbox, could).
"""

from __future__ import annotations

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
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import NoReturn

from prodline.config.release import BundleRef
from prodline.errors import ProdlineError

from .bundle import bundle_key
from .store import ArtifactCorrupt, ArtifactMissing, ArtifactStore

CACHE_VARIABLE = "PRODLINE_CACHE_DIR"
# A cached copy found edited is fetched again; one that keeps failing while being read is being
# rewritten as we read it, by something on this worker: give up rather than loop.
_ROUNDS = 4  # the first use, then up to three fetches
# How many symbolic links :meth:`BundleCache.read` follows to reach a file.
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

        What is extracted is the bytes that hashed to the digest, held in memory, so no
        change to the cache after (or while) they were read can reach the checkout.
        """
        into.mkdir(parents=True, exist_ok=True)
        if any(into.iterdir()):
            raise FileExistsError(errno.EEXIST, "a bundle checkout needs an empty folder", str(into))
        data, cached = self._verified(ref)
        try:
            _extract(data, _LAYOUTS.of(ref.digest, data), into)
        except BaseException as exc:
            _empty(into)
            self._refuse(ref, cached, exc)
        return into

    def read(self, ref: BundleRef, path: str) -> bytes:
        """The bytes of the file ``path`` (relative, ``/``-separated) in ``ref``, proven like a checkout.

        Symbolic links inside the bundle are followed, as a step's checkout would.
        Raises :class:`NotInBundle` if there is no such file.
        """
        wanted = posixpath.normpath(path)
        if wanted.startswith("/") or wanted in (".", "..") or wanted.startswith("../"):
            raise NotInBundle(f"{path!r} is not a path inside bundle {ref.digest}")
        data, cached = self._verified(ref)
        try:
            found = _find(data, _LAYOUTS.of(ref.digest, data), wanted)
        except BaseException as exc:
            self._refuse(ref, cached, exc)
        if found is None:
            raise NotInBundle(f"bundle {ref.digest} has no file {path!r}")
        return found

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

    def _verified(self, ref: BundleRef) -> tuple[bytes, os.stat_result]:
        """The cached tar's bytes, read once into memory and hashed there, and which file they came
        from. A copy that does not hash to the digest (edited since it was verified) is thrown away
        and the bundle fetched again from the store: it is never used."""
        path = self._archive(ref)
        cached: os.stat_result | None = None
        for round_ in range(_ROUNDS):
            if round_:
                self._refetch(ref, cached)
            try:
                f = path.open("rb")
            except FileNotFoundError:
                cached = None
                continue
            with f:
                cached = os.fstat(f.fileno())
                if cached.st_size != ref.size:  # told apart without reading it
                    continue
                data = f.read(ref.size + 1)  # one more: a copy growing as we read is not the bundle
            if len(data) == ref.size and "sha256:" + hashlib.sha256(data).hexdigest() == ref.digest:
                return data, cached
        raise BundleCorrupt(
            f"the cached copy of bundle {ref.digest} at {path} changed while it was being read, again and again: "
            "something on this worker is writing into its bundle cache (a step?); it was not used"
        )

    def _refuse(self, ref: BundleRef, cached: os.stat_result, exc: BaseException) -> NoReturn:
        """Re-raise ``exc``, met using the bundle's own (verified) bytes: if it is about them, the
        bundle is refused and its cached copy removed; if it is about this worker (a full disk),
        it goes up as it is and the attempt is retried."""
        if not isinstance(exc, _Unsafe | tarfile.TarError):
            raise exc
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


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    offset: int  # where its bytes start in the archive
    size: int
    mode: int  # as the data filter leaves it
    link: str | None  # a symbolic link's target, as stored


def _layout(data: bytes) -> tuple[_Entry, ...]:
    """Every entry of a verified archive, checked (ours, then tarfile's ``data`` filter), before
    anything is written."""
    entries = _Entries()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        members = tar.getmembers()
    for member in members:
        entries.check(member)
    # The filter resolves paths on disk; against an empty folder it judges the names alone,
    # which is what a fresh checkout is, so its verdict holds for every checkout.
    with tempfile.TemporaryDirectory(prefix="prodline-filter-") as empty:
        real = os.path.realpath(empty)
        members = [tarfile.data_filter(m, real) for m in members]
    return tuple(_Entry(m.name, m.offset_data, m.size, m.mode, m.linkname if m.issym() else None) for m in members)


class _Layouts:
    """The checked entries of the bundles this process verified, by digest, the most recent kept.

    They are a function of bytes that hashed to the digest, so they hold for any bytes that
    hash to it again: each use still reads and hashes the archive, but parses and checks it
    once. They live in the worker's memory, which a step does not edit as it can the disk.
    """

    def __init__(self, keep: int = 64):
        self.keep = keep
        self._known: OrderedDict[str, tuple[_Entry, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def of(self, digest: str, data: bytes) -> tuple[_Entry, ...]:
        with self._lock:
            known = self._known.get(digest)
            if known is not None:
                self._known.move_to_end(digest)
                return known
        layout = _layout(data)  # raises for an archive refused: nothing is kept
        with self._lock:
            self._known[digest] = layout
            while len(self._known) > self.keep:
                self._known.popitem(last=False)
        return layout


_LAYOUTS = _Layouts()


def _extract(data: bytes, layout: tuple[_Entry, ...], dest: Path) -> None:
    """Write a verified archive's checked entries into the empty folder ``dest``.

    Written here rather than by ``TarFile.extract`` (which for a 2,000-file bundle takes
    twice as long): each file is created new (``O_EXCL``) and never through a link
    (``O_NOFOLLOW``; no entry lies below one), its bytes straight from the verified buffer,
    its mode the filter's (whatever the worker's umask). Times are not set: files are dated
    by their checkout (the canonical tar zeroes them).
    """
    view = memoryview(data)
    made = {""}
    for entry in layout:
        parent = posixpath.dirname(entry.name)
        if parent not in made:
            os.makedirs(os.path.join(dest, parent), exist_ok=True)
            made.add(parent)
        path = os.path.join(dest, entry.name)
        if entry.link is not None:
            os.symlink(entry.link, path)
            continue
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, entry.mode)
            chunk = view[entry.offset : entry.offset + entry.size]
            while chunk:
                chunk = chunk[os.write(fd, chunk) :]
        finally:
            os.close(fd)
    _check_links(dest, [entry.name for entry in layout if entry.link is not None])


def _find(data: bytes, layout: tuple[_Entry, ...], name: str) -> bytes | None:
    """The bytes of the file ``name`` in a verified archive, through links inside it; None if none."""
    by_name = {entry.name: entry for entry in layout}
    for _ in range(_MAX_LINKS + 1):
        entry = by_name.get(name)
        if entry is None:
            return None
        if entry.link is None:
            return data[entry.offset : entry.offset + entry.size]
        name = posixpath.normpath(posixpath.join(posixpath.dirname(name), entry.link))
    return None  # a chain of links longer than any bundle needs


class _Entries:
    """What an archive listed so far: each name and whether it is a link, and the folders names imply."""

    def __init__(self) -> None:
        self.links: dict[str, bool] = {}
        self.folders: set[str] = set()

    def check(self, member: tarfile.TarInfo) -> None:
        name = member.name
        if (
            name.startswith("/")
            or name in ("", ".", "..")
            or posixpath.normpath(name) != name
            or name.startswith("../")
        ):
            raise _Unsafe(f"entry {name!r} is not a plain relative path inside the bundle")
        if name in self.links:
            raise _Unsafe(f"entry {name!r} appears twice")
        if name in self.folders:
            raise _Unsafe(f"entry {name!r} is also the folder of earlier entries")
        parents = []
        parent = posixpath.dirname(name)
        while parent:
            if parent in self.links:
                what = "symbolic link" if self.links[parent] else "file"
                raise _Unsafe(f"entry {name!r} lies below the {what} {parent!r}")
            parents.append(parent)
            parent = posixpath.dirname(parent)
        if set(member.pax_headers) - {"path", "linkpath"} or member.sparse is not None:
            raise _Unsafe(f"entry {name!r} carries PAX headers or sparse data no bundle has")
        if member.issym():
            target = posixpath.normpath(posixpath.join(posixpath.dirname(name), member.linkname))
            if member.linkname.startswith("/") or target == ".." or target.startswith("../"):
                raise _Unsafe(f"symbolic link {name!r} -> {member.linkname!r} leaves the bundle")
        elif not member.isreg():
            raise _Unsafe(f"entry {name!r} is not a file or a symbolic link")
        self.links[name] = member.issym()
        self.folders.update(parents)


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
        try:
            shutil.rmtree(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            pass  # a folder without write access: give every folder back to its owner, once more
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
