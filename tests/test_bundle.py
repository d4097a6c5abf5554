"""Release bundles: what a folder packs into, and how a worker gets it back.

Packing must name the same content with the same digest on any machine and
refuse what cannot travel (links leaving the root, FIFOs, too much); the
worker's cache must fetch once, refuse bytes that do not match the digest and
archives that would write outside their folder, and give each attempt a copy
it may change.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import tarfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from prodline.artifacts.bundle import BundleError, Packed, bundle_key, pack, upload
from prodline.artifacts.cache import BundleCache, BundleCorrupt, NotInBundle
from prodline.artifacts.store import ArtifactMissing, LocalArtifactStore
from prodline.config.release import BundleRef

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run([*GIT, "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def git_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q")
    return path


def commit_all(repo: Path) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "files")


def write(root: Path, files: Mapping[str, str | bytes], mode: int | None = None) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        if mode is not None:
            path.chmod(mode)
    return root


def names(packed: Packed) -> list[str]:
    with tarfile.open(packed.archive) as tar:
        return tar.getnames()


def packed_names(root: Path) -> list[str]:
    with pack(root) as packed:
        return names(packed)


def digest(root: Path) -> str:
    with pack(root) as packed:
        return packed.ref.digest


SERVICE = {"service.yaml": "name: api\n", "deploy.sh": "#!/bin/sh\necho deploy\n", "infra/main.tf": "# tf\n"}


# --- the canonical archive -----------------------------------------------------------------


def test_same_content_packs_to_the_same_digest_whatever_mtimes_modes_umask_and_order(tmp_path):
    first = write(tmp_path / "one", SERVICE)
    (first / "deploy.sh").chmod(0o755)
    old = os.umask(0o077)
    try:  # the second copy: written in the other order, another umask, other times and permissions
        second = tmp_path / "two"
        for rel in reversed(list(SERVICE)):
            write(second, {rel: SERVICE[rel]})
    finally:
        os.umask(old)
    (second / "deploy.sh").chmod(0o700)
    (second / "service.yaml").chmod(0o600)
    for path in second.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000))

    assert digest(first) == digest(second)


def test_a_changed_file_or_executable_bit_changes_the_digest(tmp_path):
    root = write(tmp_path / "svc", SERVICE)
    before = digest(root)
    (root / "infra/main.tf").write_text("# tf!\n")
    changed = digest(root)
    (root / "service.yaml").chmod(0o755)

    assert len({before, changed, digest(root)}) == 3


def test_the_archive_is_sorted_zeroed_and_its_digest_is_the_sha256_of_the_tar(tmp_path):
    root = write(tmp_path / "svc", SERVICE)
    (root / "deploy.sh").chmod(0o750)
    if os.geteuid() == 0:  # another owner must not show either
        os.chown(root / "service.yaml", 1234, 5678)

    with pack(root) as packed:
        tar_bytes = packed.archive.read_bytes()
        with tarfile.open(packed.archive) as tar:
            members = tar.getmembers()

    assert packed.ref.digest == "sha256:" + hashlib.sha256(tar_bytes).hexdigest()
    assert packed.ref.size == len(tar_bytes) and packed.ref.files == 3
    assert [m.name for m in members] == ["deploy.sh", "infra/main.tf", "service.yaml"]
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members} == {(0, 0, "", "", 0)}
    assert {m.name: m.mode for m in members} == {"deploy.sh": 0o755, "infra/main.tf": 0o644, "service.yaml": 0o644}
    assert not packed.archive.exists()  # the context manager deleted it


GOLDEN = {"a.txt": "a\n", "bin/run": "#!/bin/sh\n", "deep/" + "n" * 120 + ".tf": "long\n", "é/ü.txt": "utf-8\n"}


def golden_tree(root: Path) -> Path:
    write(root, GOLDEN)
    (root / "bin/run").chmod(0o755)
    (root / "link").symlink_to("é/ü.txt")
    return root


def test_the_canonical_format_is_pinned_and_plain_tar_reads_it(tmp_path):
    """Every byte of the tar is in the digest: a change to the writer re-names every bundle (and
    uploads it again), so it must be deliberate. This digest changes only with the format."""
    root = golden_tree(tmp_path / "svc")
    with pack(root) as packed:
        assert packed.ref.digest == "sha256:25d3ab940cb49e607bcbc1fc18bd6c1002ac52e0d0ae30d6f488caf373d41cde"
        out = tmp_path / "out"
        out.mkdir()
        subprocess.run(["tar", "-xf", str(packed.archive), "-C", str(out)], check=True)

    assert {str(p.relative_to(out)): p.read_text() for p in out.rglob("*") if p.is_file() and not p.is_symlink()} == (
        GOLDEN
    )
    assert os.readlink(out / "link") == "é/ü.txt" and os.access(out / "bin/run", os.X_OK)


def test_a_hard_link_is_stored_as_a_plain_file(tmp_path):
    root = write(tmp_path / "svc", {"a.txt": "same\n"})
    os.link(root / "a.txt", root / "b.txt")

    with pack(root) as packed, tarfile.open(packed.archive) as tar:
        assert [(m.name, m.isreg(), m.size) for m in tar.getmembers()] == [("a.txt", True, 5), ("b.txt", True, 5)]


# --- which files ------------------------------------------------------------------------


def test_in_git_tracked_and_untracked_files_are_packed_ignored_and_prodlineignored_ones_not(tmp_path):
    repo = git_repo(tmp_path / "repo")
    write(repo, {".gitignore": "*.log\n", "svc/app.py": "app\n", "svc/docs/guide.md": "big docs\n"})
    write(repo, {"svc/.prodlineignore": "docs/\n"})
    commit_all(repo)
    write(repo, {"svc/new.py": "not committed yet\n", "svc/debug.log": "ignored by git\n"})

    # docs/ is tracked by git and still left out: .prodlineignore filters git's list too
    assert packed_names(repo / "svc") == [".prodlineignore", "app.py", "new.py"]


def test_a_root_with_dotdot_packs_the_shared_module_next_to_the_service_and_nothing_else(tmp_path):
    repo = git_repo(tmp_path / "repo")
    write(repo, {"platform/svc/service.yaml": "s\n", "platform/modules/db/main.tf": "db\n", "other/x": "x\n"})
    commit_all(repo)

    assert packed_names(repo / "platform/svc/..") == ["modules/db/main.tf", "svc/service.yaml"]
    assert digest(repo / "platform/svc/..") == digest(repo / "platform")


def test_a_nested_repository_is_listed_by_its_own_git(tmp_path):
    outer = git_repo(tmp_path / "outer")
    write(outer, {"svc/main.tf": "m\n"})
    commit_all(outer)
    inner = git_repo(outer / "svc/vendor/lib")
    write(inner, {".gitignore": "*.tmp\n", "lib.tf": "l\n", "scratch.tmp": "t\n"})

    assert packed_names(outer / "svc") == ["main.tf", "vendor/lib/.gitignore", "vendor/lib/lib.tf"]


def test_an_ignored_or_empty_folder_is_refused_rather_than_shipped_empty(tmp_path):
    repo = git_repo(tmp_path / "repo")
    write(repo, {".gitignore": "build/\n", "build/svc/service.yaml": "s\n"})

    with pytest.raises(BundleError, match=rf"{repo}/build/svc: nothing to bundle: .* that no .gitignore ignores it"):
        pack(repo / "build/svc")


def test_the_caller_can_leave_out_paths_and_a_folder_left_empty_by_that_still_packs(tmp_path):
    app = write(tmp_path / "platform", {"prodline.yaml": "environments: []\n", "checks/smoke.sh": "exit 0\n"})

    assert packed_names(app) == ["checks/smoke.sh", "prodline.yaml"]
    with pack(app, exclude=["prodline.yaml"]) as packed:
        assert names(packed) == ["checks/smoke.sh"]
    with pack(app, exclude=["prodline.yaml", "checks"]) as packed:
        assert names(packed) == [] and packed.ref.files == 0


def test_a_root_above_the_work_tree_lists_the_repository_inside_it_by_git(tmp_path):
    repo = git_repo(tmp_path / "ci/checkout")
    write(repo, {".gitignore": "node_modules/\n", "svc/main.tf": "m\n", "node_modules/x/index.js": "big\n"})
    commit_all(repo)
    write(tmp_path / "ci", {"notes.txt": "outside git\n"})

    assert packed_names(tmp_path / "ci") == ["checkout/.gitignore", "checkout/svc/main.tf", "notes.txt"]


PATTERNS = """\
# comment
*.log
!keep.log
build/
/top.txt
docs/**/*.md
**/cache
a/**/b
[xy].txt
sub/*.tmp
\\#literal
"""
TREE = [
    "app.log", "keep.log", "build/out.o", "src/build/x.o", "top.txt", "src/top.txt", "docs/a/b/c.md",
    "docs/readme.txt", "lib/cache/blob", "cache/blob", "a/b", "a/q/r/b", "a/q/c", "x.txt", "z.txt",
    "sub/f.tmp", "sub/deep/f.tmp", "#literal", "src/nested/.prodlineignore", "src/nested/n.json", "src/nested/n.txt",
]  # fmt: skip


def test_prodlineignore_outside_git_matches_what_git_would_exclude(tmp_path):
    """The same patterns and folders through git's own matcher and through ours."""
    files: dict[str, str] = {rel: "x\n" for rel in TREE} | {".prodlineignore": PATTERNS}
    files["src/nested/.prodlineignore"] = "*.json\n!../top.txt\n"
    plain = write(tmp_path / "plain", files)
    reference = git_repo(write(tmp_path / "reference", files))
    listed = git(reference, "ls-files", "-z", "--others", "--exclude-per-directory=.prodlineignore")
    expected = sorted(p for p in listed.split("\0") if p)

    assert "keep.log" in expected and "app.log" not in expected and "src/nested/n.txt" in expected  # the check bites
    assert packed_names(plain) == expected


def test_git_internals_terraform_caches_state_and_plans_never_travel_but_the_lock_file_does(tmp_path):
    never = {
        ".terraform/providers/p": "binary",
        "infra/.terraform/modules/m.json": "{}",
        "terraform.tfstate": "{}",
        "infra/terraform.tfstate.backup": "{}",
        "infra/terraform.tfstate.d/staging/terraform.tfstate": "{}",
        "plan.tfplan": "plan",
    }
    kept = {"infra/.terraform.lock.hcl": "lock", "infra/main.tf": "m"}
    outside = write(tmp_path / "outside", never | kept | {".git/config": "[core]"})
    repo = git_repo(tmp_path / "repo")
    write(repo, never | kept)
    git(repo, "add", "-f", ".")  # even committed state stays out
    git(repo, "commit", "-q", "-m", "state committed by mistake")

    for root in (outside, repo):
        with pack(root) as packed:
            assert names(packed) == sorted(kept)
            assert any("terraform.tfstate" in w for w in packed.warnings)


# --- what cannot be packed ------------------------------------------------------------------


def test_symbolic_links_inside_the_root_are_kept_and_ones_leaving_it_are_refused(tmp_path):
    root = write(tmp_path / "svc", {"scripts/deploy.sh": "d\n", "service.yaml": "s\n"})
    (tmp_path / "secret").write_text("outside\n")
    (root / "deploy").symlink_to("scripts/deploy.sh")
    (root / "scripts/up").symlink_to("..")

    with pack(root) as packed, tarfile.open(packed.archive) as tar:
        links = {m.name: m.linkname for m in tar.getmembers() if m.issym()}
    assert links == {"deploy": "scripts/deploy.sh", "scripts/up": ".."}

    (root / "scripts/leak").symlink_to("../../secret")
    with pytest.raises(BundleError) as leaving:
        pack(root)
    assert f"{root}/scripts/leak is a symbolic link to ../../secret, which leaves {root}" in str(leaving.value)
    assert leaving.value.exit_code == 2

    (root / "scripts/leak").unlink()
    (root / "abs").symlink_to(root / "service.yaml")  # absolute, even pointing inside: not portable
    with pytest.raises(BundleError, match=rf"{root}/abs is a symbolic link to the absolute path {root}/service.yaml"):
        pack(root)


def test_a_link_that_leaves_on_paper_and_comes_back_is_stored_relative_to_the_bundle(tmp_path):
    root = write(tmp_path / "svc", {"a.txt": "a\n"})
    (root / "b").symlink_to("../svc/a.txt")  # on a worker the root is not called "svc"

    with pack(root) as packed, tarfile.open(packed.archive) as tar:
        assert tar.getmember("b").linkname == "a.txt"


def test_a_fifo_is_refused_with_the_fix(tmp_path):
    root = write(tmp_path / "svc", {"a.txt": "a\n"})
    os.mkfifo(root / "pipe")

    with pytest.raises(BundleError, match=rf"{root}/pipe is a FIFO: .* exclude it in {root}/.prodlineignore"):
        pack(root)
    (root / ".prodlineignore").write_text("pipe\n")
    assert packed_names(root) == [".prodlineignore", "a.txt"]


def test_size_warning_and_limits_name_the_biggest_parts_and_the_ignore_file(tmp_path):
    root = write(tmp_path / "svc", {"big/data.bin": b"x" * 6000, "small.txt": "s\n", "other/o.txt": "o\n"})

    with pack(root, warn_bytes=5000) as packed:
        assert len(packed.warnings) == 1
        assert "holds 5.9 KB in 3 files (largest: big/ 5.9 KB" in packed.warnings[0]
        assert f"{root}/.prodlineignore" in packed.warnings[0]
    with pack(root, warn_bytes=7000) as packed:
        assert packed.warnings == []
    with pytest.raises(BundleError, match=r"5.9 KB to bundle, more than the limit of 5.9 KB \(largest: big/"):
        pack(root, max_bytes=6003)
    with pytest.raises(BundleError, match=rf"{root}: 3 files to bundle, more than the limit of 2 .*\.prodlineignore"):
        pack(root, max_files=2)
    (root / ".prodlineignore").write_text("big/\n")
    with pack(root, max_bytes=6003, max_files=3) as packed:
        assert packed.ref.files == 3


# --- upload -------------------------------------------------------------------------------


class CountingStore(LocalArtifactStore):
    def __init__(self, root: Path, delay: float = 0.0):
        super().__init__(root)
        self.gets = 0
        self.delay = delay

    def get_to_file(self, key: str, path: Path) -> None:
        self.gets += 1
        time.sleep(self.delay)
        super().get_to_file(key, path)


@pytest.fixture
def store(tmp_path) -> CountingStore:
    return CountingStore(tmp_path / "store")


def test_the_same_content_is_uploaded_once(tmp_path, store):
    root = write(tmp_path / "svc", SERVICE)
    with pack(root) as packed:
        sent = upload(packed, store)
        assert sent == packed.archive.stat().st_size > 0
        assert (store.root / bundle_key(packed.ref)).read_bytes() == packed.archive.read_bytes()
    os.utime(root / "service.yaml", (1, 1))  # touched, not changed
    with pack(root) as again:
        assert upload(again, store) == 0


# --- the worker's cache -----------------------------------------------------------------------


def uploaded(tmp_path: Path, store: LocalArtifactStore, files: dict[str, str] = SERVICE) -> BundleRef:
    root = write(tmp_path / "source", files)
    (root / "deploy.sh").chmod(0o755)
    (root / "link").symlink_to("deploy.sh")
    with pack(root) as packed:
        upload(packed, store)
        return packed.ref


def listing(tree: Path) -> dict[str, str]:
    return {
        str(p.relative_to(tree)): ("-> " + os.readlink(p)) if p.is_symlink() else p.read_text()
        for p in sorted(tree.rglob("*"))
        if p.is_symlink() or p.is_file()
    }


ORIGINAL = {**SERVICE, "link": "-> deploy.sh"}


def test_checkout_fetches_a_bundle_once_and_gives_each_attempt_a_writable_dated_copy(tmp_path, store):
    ref = uploaded(tmp_path, store)
    cache = BundleCache(store, tmp_path / "cache")

    old = os.umask(0o077)  # the worker's umask does not change the bundle's modes
    try:
        first = cache.checkout(ref, tmp_path / "attempt-1")
    finally:
        os.umask(old)
    second = BundleCache(store, tmp_path / "cache").checkout(ref, tmp_path / "attempt-2")  # another activity

    assert store.gets == 1
    assert listing(first) == listing(second) == ORIGINAL
    # the cache keeps the canonical tar itself, byte for byte what the store holds
    assert cache.fetch(ref).read_bytes() == (store.root / bundle_key(ref)).read_bytes()
    assert {p.name for p in cache.root.iterdir()} == {
        ".locks",
        ".incoming",
        ref.digest.removeprefix("sha256:") + ".tar",
    }
    assert (first / "deploy.sh").stat().st_mode & 0o777 == 0o755
    assert (first / "infra/main.tf").stat().st_mode & 0o777 == 0o644
    # dated by the checkout, not 1970 (the canonical tar zeroes times): tools comparing times see fresh files
    assert (first / "service.yaml").stat().st_mtime > time.time() - 600


def test_two_activities_fetching_the_same_bundle_at_once_fetch_it_once(tmp_path):
    store = CountingStore(tmp_path / "store", delay=0.2)
    ref = uploaded(tmp_path, store)
    copies: list[dict[str, str]] = []

    def attempt(i: int) -> None:
        copies.append(listing(BundleCache(store, tmp_path / "cache").checkout(ref, tmp_path / f"attempt-{i}")))

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert store.gets == 1 and copies == [ORIGINAL] * 3


def cache_is_empty(cache: BundleCache) -> bool:
    return [p.name for p in cache.root.iterdir() if p.name != ".locks"] in ([], [".incoming"]) and not any(
        (cache.root / ".incoming").iterdir()
    )


def tampered(key: Path) -> bytes:
    """The stored archive with one byte of a script changed (same size)."""
    tar_bytes = bytearray(key.read_bytes())
    tar_bytes[tar_bytes.index(b"echo deploy")] = ord("E")
    return bytes(tar_bytes)


def test_a_bundle_replaced_in_the_store_is_refused_as_corrupt_and_leaves_nothing_in_the_cache(tmp_path, store):
    ref = uploaded(tmp_path, store)
    # Through the store's own API (as anyone with write access to a bucket could): the
    # store's checksum agrees with the new bytes; only the bundle digest can tell.
    store.put(bundle_key(ref), tampered(store.root / bundle_key(ref)))
    cache = BundleCache(store, tmp_path / "cache")

    with pytest.raises(BundleCorrupt) as corrupt:
        cache.checkout(ref, tmp_path / "attempt")
    assert f"bundle {ref.digest} in {store.root} (key {bundle_key(ref)}) is corrupt: its content hashes to" in str(
        corrupt.value
    )
    assert cache_is_empty(cache) and not any((tmp_path / "attempt").iterdir())
    with pytest.raises(BundleCorrupt, match="is corrupt: its content hashes to"):
        cache.read(ref, "service.yaml")

    store.put(bundle_key(ref), (store.root / bundle_key(ref)).read_bytes()[:100])  # truncated
    with pytest.raises(BundleCorrupt, match="is corrupt"):
        cache.checkout(ref, tmp_path / "attempt")
    assert cache_is_empty(cache)


def test_a_bundle_damaged_behind_the_stores_back_is_refused_as_corrupt(tmp_path, store):
    ref = uploaded(tmp_path, store)
    key = store.root / bundle_key(ref)
    key.write_bytes(tampered(key))
    cache = BundleCache(store, tmp_path / "cache")

    with pytest.raises(BundleCorrupt, match=rf"bundle {ref.digest} in {store.root} \(key .*\) is corrupt"):
        cache.checkout(ref, tmp_path / "attempt")
    assert cache_is_empty(cache)


def entry(name: str, data: bytes = b"", *, link: str | None = None, kind: bytes | None = None, pax=None):
    info = tarfile.TarInfo(name)
    info.size, info.pax_headers = len(data), pax or {}
    if link is not None:
        info.type, info.linkname, info.size = tarfile.SYMTYPE, link, 0
    if kind is not None:
        info.type, info.linkname, info.size = kind, link or "", 0
    return info, data


def forged(store: LocalArtifactStore, members: list[tuple[tarfile.TarInfo, bytes]]) -> BundleRef:
    """An archive put straight into the store under its true digest: only path checks can stop it."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    data = raw.getvalue()
    ref = BundleRef(digest="sha256:" + hashlib.sha256(data).hexdigest(), size=len(data), files=len(members))
    store.put(bundle_key(ref), data)
    return ref


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ([entry("ok.txt", b"ok"), entry("../x", b"escaped")], "entry '../x' is not a plain relative path"),
        ([entry("a/../../x", b"escaped")], "entry 'a/../../x' is not a plain relative path"),
        ([entry("/tmp/x", b"absolute")], "entry '/tmp/x' is not a plain relative path"),
        ([entry("out", link="../../.."), entry("ok.txt", b"ok")], "symbolic link 'out' -> '../../..' leaves the"),
        ([entry("abs", link="/etc/passwd")], "symbolic link 'abs' -> '/etc/passwd' leaves the bundle"),
        ([entry("d", link="."), entry("d/x", b"through a link")], "entry 'd/x' lies below the symbolic link 'd'"),
        # each link stays inside on paper; together they leave: caught on the finished tree
        ([entry("x", link="l/../outside"), entry("l", link=".")], "symbolic link 'x' resolves outside the bundle"),
        ([entry("ok.txt", b"ok"), entry("hard", kind=tarfile.LNKTYPE, link="/etc/passwd")], "'hard' is not a file"),
        ([entry("pipe", kind=tarfile.FIFOTYPE)], "entry 'pipe' is not a file or a symbolic link"),
        ([entry("dir", kind=tarfile.DIRTYPE)], "entry 'dir' is not a file or a symbolic link"),
        ([entry("big", b"x", pax={"GNU.sparse.realsize": "99999999999"})], "'big' carries PAX headers or sparse"),
        ([entry("a", b"1"), entry("a", b"2")], "entry 'a' appears twice"),
        ([entry("a", b"1"), entry("a/b", b"2")], "entry 'a/b' lies below the file 'a'"),
        ([entry("a/b", b"2"), entry("a", link=".")], "entry 'a' is also the folder of earlier entries"),
    ],
)
def test_an_archive_that_would_write_or_point_outside_its_folder_is_refused(tmp_path, store, members, reason):
    ref = forged(store, members)
    cache = BundleCache(store, tmp_path / "cache" / "bundles")
    into = tmp_path / "cache" / "attempt"

    with pytest.raises(BundleCorrupt) as refused:
        cache.checkout(ref, into)
    assert reason in str(refused.value) and ref.digest in str(refused.value)
    assert cache_is_empty(cache) and not any(into.iterdir())
    assert not (tmp_path / "cache" / "x").exists() and not (tmp_path / "x").exists()


def test_a_bundle_missing_from_the_store_names_the_store_variable(tmp_path, store):
    ref = BundleRef(digest="sha256:" + "0" * 64, size=10240, files=1)

    with pytest.raises(ArtifactMissing, match=f"bundle sha256:0+ is not in {store.root} .* PRODLINE_ARTIFACTS"):
        BundleCache(store, tmp_path / "cache").checkout(ref, tmp_path / "attempt")


def test_checkout_is_a_writable_copy_whose_changes_never_reach_the_cache(tmp_path, store):
    ref = uploaded(tmp_path, store)
    cache = BundleCache(store, tmp_path / "cache")

    work = cache.checkout(ref, tmp_path / "attempt-1")
    with (work / "deploy.sh").open("a") as f:  # a step appending in place
        f.write("echo changed\n")
    (work / "infra/.terraform").mkdir()
    (work / "infra/.terraform/x").write_text("init")

    assert os.access(work / "deploy.sh", os.X_OK) and (work / "deploy.sh").stat().st_mode & 0o200
    assert os.readlink(work / "link") == "deploy.sh"
    assert listing(cache.checkout(ref, tmp_path / "attempt-2")) == ORIGINAL
    assert store.gets == 1
    with pytest.raises(FileExistsError):
        cache.checkout(ref, work)


def test_a_bundle_left_empty_by_its_excludes_checks_out_as_an_empty_folder(tmp_path, store):
    app = write(tmp_path / "platform", {"prodline.yaml": "environments: []\n"})
    with pack(app, exclude=["prodline.yaml"]) as packed:
        upload(packed, store)
    cache = BundleCache(store, tmp_path / "cache")

    assert list(cache.checkout(packed.ref, tmp_path / "attempt").iterdir()) == []
    with pytest.raises(NotInBundle):
        cache.read(packed.ref, "prodline.yaml")


def test_the_cache_lives_under_prodline_cache_dir(tmp_path, store, monkeypatch):
    monkeypatch.setenv("PRODLINE_CACHE_DIR", str(tmp_path / "cache-dir"))
    ref = uploaded(tmp_path, store)

    assert BundleCache(store).fetch(ref).parent == tmp_path / "cache-dir" / "bundles"


# --- reading one file (the service file, for the resolve activity) ---------------------------------


def test_read_returns_a_files_bytes_following_links_inside_the_bundle(tmp_path, store):
    ref = uploaded(tmp_path, store)
    cache = BundleCache(store, tmp_path / "cache")

    assert cache.read(ref, "service.yaml") == b"name: api\n"
    assert cache.read(ref, "./infra//main.tf") == b"# tf\n"
    assert cache.read(ref, "link") == SERVICE["deploy.sh"].encode()  # as the step's checkout would see it
    assert store.gets == 1


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("nothere.yaml", "has no file 'nothere.yaml'"),
        ("infra", "has no file 'infra'"),  # a folder
        ("../service.yaml", "'../service.yaml' is not a path inside bundle"),
        ("/etc/passwd", "'/etc/passwd' is not a path inside bundle"),
    ],
)
def test_read_of_what_is_not_a_file_of_the_bundle_says_so(tmp_path, store, path, message):
    ref = uploaded(tmp_path, store)

    with pytest.raises(NotInBundle, match=re.escape(message)) as missing:
        BundleCache(store, tmp_path / "cache").read(ref, path)
    assert isinstance(missing.value, BundleCorrupt)  # callers refusing corrupt bundles refuse this too


def test_read_checks_every_entry_of_a_forged_archive(tmp_path, store):
    ref = forged(store, [entry("service.yaml", b"name: api\n"), entry("../x", b"escaped")])

    with pytest.raises(BundleCorrupt, match=r"entry '\.\./x' is not a plain relative path"):
        BundleCache(store, tmp_path / "cache").read(ref, "service.yaml")


# --- a cache edited behind the worker's back ---------------------------------------------------


def edit_cache_as_a_step_could(root: Path) -> int:
    """What any step on the worker can do (it runs as the worker's user): make the whole cache
    writable and rewrite, in place and at the same size, every cached copy of the deploy script."""
    subprocess.run(["chmod", "-R", "u+w", str(root)], check=True)
    edited = 0
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and b"echo deploy" in (data := path.read_bytes()):
            path.write_bytes(data.replace(b"echo deploy", b"echo hacked"))
            edited += 1
    return edited


def test_a_cache_edited_by_a_step_is_never_used_the_next_checkout_gets_the_bundles_bytes(tmp_path, store):
    ref = uploaded(tmp_path, store)
    cache = BundleCache(store, tmp_path / "cache")
    cache.checkout(ref, tmp_path / "attempt-1")

    assert edit_cache_as_a_step_could(cache.root) >= 1  # the edit reached the cache: the test bites
    work = cache.checkout(ref, tmp_path / "attempt-2")

    assert listing(work) == ORIGINAL
    assert store.gets == 2  # the edited copy was thrown away and fetched again
    assert listing(cache.checkout(ref, tmp_path / "attempt-3")) == ORIGINAL
    assert store.gets == 2  # and the new copy is used from then on


def test_a_cache_edited_by_a_step_is_never_what_read_returns(tmp_path, store):
    ref = uploaded(tmp_path, store)
    cache = BundleCache(store, tmp_path / "cache")
    assert cache.read(ref, "deploy.sh") == SERVICE["deploy.sh"].encode()

    assert edit_cache_as_a_step_could(cache.root) >= 1
    assert cache.read(ref, "deploy.sh") == SERVICE["deploy.sh"].encode()
    assert store.gets == 2


def test_a_cached_copy_swapped_for_another_bundle_or_grown_is_not_used(tmp_path, store):
    ref = uploaded(tmp_path, store)
    other = uploaded(tmp_path / "other", store, {**SERVICE, "deploy.sh": "#!/bin/sh\necho OTHER\n"})
    cache = BundleCache(store, tmp_path / "cache")
    mine = cache.fetch(ref)

    mine.unlink()  # a new file in its place: another bundle's archive, digest-true for that one
    mine.write_bytes(cache.fetch(other).read_bytes())
    assert listing(cache.checkout(ref, tmp_path / "attempt-1")) == ORIGINAL

    with cache.fetch(ref).open("ab") as f:  # more after the end of the archive
        f.write(b"\0" * 10240)
    assert listing(cache.checkout(ref, tmp_path / "attempt-2")) == ORIGINAL
    assert store.gets == 4  # both bundles once, then ref twice more


def test_an_edited_cache_and_an_edited_store_object_refuse_the_bundle_and_hand_out_nothing(tmp_path, store):
    ref = uploaded(tmp_path, store)
    cache = BundleCache(store, tmp_path / "cache")
    cache.checkout(ref, tmp_path / "attempt-1")
    edit_cache_as_a_step_could(cache.root)
    key = store.root / bundle_key(ref)
    key.write_bytes(tampered(key))
    into = tmp_path / "attempt-2"

    with pytest.raises(BundleCorrupt, match=rf"bundle {ref.digest} in {store.root} \(key .*\) is corrupt"):
        cache.checkout(ref, into)
    assert into.is_dir() and not any(into.iterdir())  # nothing edited is left for a step to run
    with pytest.raises(BundleCorrupt, match="is corrupt"):
        cache.read(ref, "deploy.sh")
    assert cache_is_empty(cache)


class Meddled(BundleCache):
    """A cache that something on the worker rewrites as soon as each fresh copy lands."""

    def _refetch(self, ref: BundleRef, bad: os.stat_result | None) -> None:
        super()._refetch(ref, bad)
        edit_cache_as_a_step_could(self.root)


def test_a_cache_rewritten_after_every_fetch_fails_the_checkout_clearly_after_a_few_fetches(tmp_path, store):
    ref = uploaded(tmp_path, store)
    into = tmp_path / "attempt"

    with pytest.raises(BundleCorrupt, match=r"changed while it was being read, again and again: .* it was not used"):
        Meddled(store, tmp_path / "cache").checkout(ref, into)
    assert store.gets == 3 and not any(into.iterdir())  # then it gave up
