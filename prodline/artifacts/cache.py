"""A worker's bundles: fetched once per digest, verified, extracted safely, copied per attempt.

Layout under the cache root (``$PRODLINE_CACHE_DIR/bundles``, else
``~/.cache/prodline/bundles``):

* ``<hex>/`` -- the extracted tree of bundle ``sha256:<hex>``, read-only. It only
  appears by an atomic rename once the downloaded archive hashed to the digest and
  every entry was extracted and checked, so its existence is the "verified" mark:
  later uses neither fetch nor hash again;
* ``.incoming/`` -- downloads and extractions in progress (a crashed one is
  cleared by the next fetch of the same digest);
* ``.locks/<hex>.lock`` -- an ``fcntl`` lock per digest, so that two activities on
  one worker (threads or processes) fetch a bundle once between them.

Extraction trusts nothing in the archive, digest or not (whoever can write the
store can forge one): tarfile's ``data`` filter plus checks of our own -- only
files and symbolic links, canonical relative names (no ``/`` at the start, no
``..``), no duplicates, nothing below a link, links relative and inside, checked
again on the finished tree.

Each attempt gets its own writable copy (:meth:`BundleCache.checkout`): steps
write into their folder (``terraform init`` makes ``.terraform/``) and may append
to files in place, so hard links to the cached tree would let one attempt change
the next one's code. Files are copied with ``copy_file_range``, which the kernel
turns into a reflink on filesystems that have them (XFS, btrfs). Not done: a size
cap on the cache (nothing is evicted; delete the folder to reclaim space).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from prodline.config.release import BundleRef
from prodline.errors import ProdlineError

from .bundle import bundle_key
from .store import ArtifactCorrupt, ArtifactMissing, ArtifactStore

CACHE_VARIABLE = "PRODLINE_CACHE_DIR"
_CHUNK = 1 << 20


class BundleCorrupt(ProdlineError):
    """The stored bundle is not what its digest names, or not safe to extract: retrying cannot help."""


def default_root() -> Path:
    base = os.environ.get(CACHE_VARIABLE)
    return Path(base) / "bundles" if base else Path.home() / ".cache" / "prodline" / "bundles"


class BundleCache:
    def __init__(self, store: ArtifactStore, root: Path | None = None):
        self.store = store
        self.root = root if root is not None else default_root()

    def tree(self, ref: BundleRef) -> Path:
        """The verified, extracted, read-only tree of ``ref``, fetched on first use."""
        hexdigest = ref.digest.removeprefix("sha256:")
        target = self.root / hexdigest
        if target.is_dir():
            return target
        for folder in (self.root, self.root / ".locks", self.root / ".incoming"):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _locked(self.root / ".locks" / f"{hexdigest}.lock"):
            if target.is_dir():  # another activity fetched it while this one waited
                return target
            for stale in (self.root / ".incoming").glob(f"{hexdigest}.*"):
                _remove(stale)  # left by a fetch that crashed: the lock says nobody is on it
            work = Path(tempfile.mkdtemp(prefix=f"{hexdigest}.", dir=self.root / ".incoming"))
            try:
                archive = work / "bundle.tar"
                self._download(ref, archive)
                _verify(archive, ref, self._where(ref))
                extracted = work / "tree"
                _extract(archive, extracted, ref, self._where(ref))
                archive.unlink()
                _seal(extracted, ref, self._where(ref))
                extracted.rename(target)
                target.chmod(0o555)  # after the rename: moving a folder needs it writable
            finally:
                _remove(work)
        return target

    def checkout(self, ref: BundleRef, into: Path) -> Path:
        """A writable copy of ``tree(ref)`` at ``into`` (absent or empty), for one activity attempt."""
        source = self.tree(ref)
        into.mkdir(parents=True, exist_ok=True)
        if any(into.iterdir()):
            raise FileExistsError(errno.EEXIST, "a bundle checkout needs an empty folder", str(into))
        _copy_tree(source, into)
        return into

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


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when the descriptor closes, even if the process dies
        yield
    finally:
        os.close(fd)


# --- verify and extract ------------------------------------------------------------------


class _Unsafe(Exception):
    pass


def _verify(archive: Path, ref: BundleRef, where: str) -> None:
    fix = "the stored object was changed or damaged: delete it and start the release again to upload it anew"
    size = archive.stat().st_size
    if size != ref.size:
        raise BundleCorrupt(f"bundle {ref.digest} in {where} is corrupt: it is {size:,} bytes, not {ref.size:,}; {fix}")
    with archive.open("rb") as f:
        got = "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
    if got != ref.digest:
        raise BundleCorrupt(f"bundle {ref.digest} in {where} is corrupt: its content hashes to {got}; {fix}")


def _extract(archive: Path, dest: Path, ref: BundleRef, where: str) -> None:
    """Extract a verified archive, refusing any entry `prodline release start` would never have packed."""
    dest.mkdir(mode=0o700)
    try:
        with tarfile.open(archive, mode="r:") as tar:
            seen: dict[str, bool] = {}  # name -> is a link
            for member in tar:
                _check_member(member, seen)
                tar.extract(member, dest, filter="data")
    except (_Unsafe, tarfile.TarError, OSError) as exc:
        reason = exc if isinstance(exc, _Unsafe) else f"it cannot be extracted: {exc}"
        raise BundleCorrupt(
            f"bundle {ref.digest} in {where} is refused: {reason}; `prodline release start` never packs "
            "such a bundle, so the object was put there by other means: delete it"
        ) from None


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


def _seal(tree: Path, ref: BundleRef, where: str) -> None:
    """Check every link on the finished tree (chains included), then make it read-only below the top."""
    real_root = Path(os.path.realpath(tree))
    for folder, dirs, files in os.walk(tree, topdown=False):
        for name in files + dirs:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                real = Path(os.path.realpath(path))
                if real != real_root and real_root not in real.parents:
                    raise BundleCorrupt(
                        f"bundle {ref.digest} in {where} is refused: symbolic link "
                        f"{os.path.relpath(path, tree)!r} resolves outside the bundle; delete the object"
                    )
            elif stat.S_ISDIR(info.st_mode):
                os.chmod(path, 0o555)
            else:
                os.chmod(path, 0o555 if info.st_mode & stat.S_IXUSR else 0o444)


def _remove(path: Path) -> None:
    """Delete a tree, read-only folders included."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir() and not path.is_symlink():
        for folder, _dirs, _files in os.walk(path):
            with contextlib.suppress(OSError):
                os.chmod(folder, 0o700)
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# --- a writable copy -----------------------------------------------------------------------


def _copy_tree(source: Path, into: Path) -> None:
    pending = [(str(source), str(into))]
    while pending:
        src_dir, dst_dir = pending.pop()
        with os.scandir(src_dir) as it:
            for item in it:
                dst = os.path.join(dst_dir, item.name)
                if item.is_symlink():
                    os.symlink(os.readlink(item.path), dst)
                elif item.is_dir():
                    os.mkdir(dst)
                    pending.append((item.path, dst))
                else:
                    _copy_file(item.path, dst, item.stat().st_mode & stat.S_IXUSR != 0)


def _copy_file(src: str, dst: str, executable: bool) -> None:
    fin = os.open(src, os.O_RDONLY)
    try:
        fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o755 if executable else 0o644)
        try:
            try:
                while os.copy_file_range(fin, fout, 1 << 30):
                    pass
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM):
                    raise
                os.lseek(fin, 0, os.SEEK_SET)
                os.ftruncate(fout, 0)
                os.lseek(fout, 0, os.SEEK_SET)
                while data := os.read(fin, _CHUNK):
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fout, view) :]
        finally:
            os.close(fout)
    finally:
        os.close(fin)
