"""Benchmark 5: release bundles -- packing at ``release start``, and a step's copy on the worker.

``python bench/bundle.py [--runs N] [--no-save]``. On a generated service folder
of 2,000 files and 20 MB, committed in a git repository:

* **pack + upload** (a first start: the store is empty) against the baseline
  ``tar --create`` of the same file list plus ``sha256sum`` of the archive, both
  subprocesses, interleaved with ours run by run. Target: at most 1.5x;
* **second start** of the same content: packs again, uploads 0 bytes;
* **first use** on a worker: fetch, verify, check out (download, hash, extract);
* **checkout**: a step attempt's writable copy, extracted from the cached tar after
  hashing it (every use proves the bytes against the digest), for that folder and
  for a small service (20 files), interleaved with the same job done by plain
  tools (``sha256sum`` of the tar, then ``tar -x``) and, for reference, ``cp -r``
  of an extracted tree (what copying a shared tree, the cache's earlier design,
  cannot go below). Target: under 50 ms;
* **read**: one file out of the cached tar (the resolve activity reads the service
  file so), and how much of every use is reading and hashing the tar.

The store is a LocalArtifactStore in a temporary folder. Prints the figures and
updates the bundle section of bench/RESULTS.md (between its markers).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from prodline.artifacts.bundle import pack, upload
from prodline.artifacts.cache import BundleCache
from prodline.artifacts.listing import list_bundle
from prodline.artifacts.store import LocalArtifactStore

BENCH = Path(__file__).resolve().parent
BEGIN, END = "<!-- bundle:begin: written by bench/bundle.py -->", "<!-- bundle:end -->"
GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com", "-c", "commit.gpgsign=false"]


def log(message: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the folders ---------------------------------------------------------------------------


def service_folder(root: Path, files: int, total: int, seed: int = 9) -> Path:
    """A committed git repository of ``files`` files, ``total`` bytes: text in nested folders, a few blobs."""
    rng = random.Random(seed)
    blobs = max(1, files // 200)
    text_bytes, blob_bytes = total * 3 // 4, total // 4
    sizes = [rng.randint(1, 100) for _ in range(files - blobs - 1)]  # and deploy.sh
    scale = text_bytes / sum(sizes)
    for i, weight in enumerate(sizes):
        path = root / f"modules/m{i % 40:02d}/sub{i % 7}/file{i:04d}.tf"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rng.randbytes(max(1, int(weight * scale)) // 2).hex())
    for i in range(blobs):
        (root / "assets").mkdir(exist_ok=True)
        (root / f"assets/blob{i}.bin").write_bytes(rng.randbytes(blob_bytes // blobs))
    (root / "deploy.sh").write_text("#!/bin/sh\necho deploy\n")
    (root / "deploy.sh").chmod(0o755)
    subprocess.run([*GIT, "-C", str(root), "init", "-q"], check=True)
    subprocess.run([*GIT, "-C", str(root), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(root), "commit", "-q", "-m", "service"], check=True)
    return root


# --- one measurement -------------------------------------------------------------------------


def timed(action: Callable[[], object]) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def baseline(root: Path, file_list: Path, scratch: Path) -> None:
    """``tar`` of the same files, then ``sha256sum`` of the archive: what packing costs with plain tools."""
    archive = scratch / "baseline.tar"
    subprocess.run(
        ["tar", "--create", "--file", str(archive), "--null", "--files-from", str(file_list)], cwd=root, check=True
    )
    subprocess.run(["sha256sum", str(archive)], check=True, capture_output=True)
    archive.unlink()


def tools_checkout(archive: Path, into: Path) -> None:
    """What a checkout does, with plain tools: hash the archive, then extract it."""
    subprocess.run(["sha256sum", str(archive)], check=True, capture_output=True)
    subprocess.run(["tar", "--extract", "--file", str(archive), "-C", str(into)], check=True)


def pack_and_upload(root: Path, store: LocalArtifactStore) -> int:
    with pack(root) as packed:
        return upload(packed, store)


def gzip_level_1(root: Path) -> float:
    """What compressing the archive at gzip's fastest level would add (why the store keeps the plain tar)."""
    with pack(root) as packed, packed.archive.open("rb") as f:
        began = time.perf_counter()
        compressor = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        while chunk := f.read(1 << 20):
            compressor.compress(chunk)
        compressor.flush()
        return time.perf_counter() - began


def measure(runs: int) -> dict:
    scratch = Path(tempfile.mkdtemp(prefix="prodline-bench-bundle-"))
    try:
        log("generating a 2,000-file, 20 MB service folder in a git repository")
        big = service_folder(scratch / "big", files=2000, total=20 * 2**20)
        small = service_folder(scratch / "small", files=20, total=200 * 2**10)
        listing = list_bundle(big)
        file_list = scratch / "files"
        file_list.write_bytes(b"".join(e.rel.encode() + b"\0" for e in listing.entries))

        times: dict[str, list[float]] = {"baseline": [], "first": [], "second": [], "listing": [], "gzip": []}
        sent: list[int] = []  # bytes uploaded by each start, first and second alternating
        log(f"pack + upload against tar + sha256sum, {runs} runs each after a warm-up, interleaved")
        for i in range(runs + 1):
            store = LocalArtifactStore(scratch / f"store-{i}")  # empty: a first start
            round_ = {}
            if i % 2:  # the baseline goes first every other round (see the checkouts below)
                round_["baseline"] = timed(lambda: baseline(big, file_list, scratch))
            round_["first"] = timed(lambda store=store: sent.append(pack_and_upload(big, store)))
            round_["second"] = timed(lambda store=store: sent.append(pack_and_upload(big, store)))
            if not i % 2:
                round_["baseline"] = timed(lambda: baseline(big, file_list, scratch))
            round_["listing"] = timed(lambda: list_bundle(big))
            round_["gzip"] = gzip_level_1(big)
            if i:  # the first round warms the page cache and the imports
                for key, value in round_.items():
                    times[key].append(value)
            shutil.rmtree(scratch / f"store-{i}")
        uploaded, again = sent[-2], max(sent[1::2])

        log("fetch, checkout and read on a worker")
        store = LocalArtifactStore(scratch / "store")
        refs = {}
        for name, folder in (("big", big), ("small", small)):
            with pack(folder) as packed:
                upload(packed, store)
                refs[name] = packed.ref
        fetch = []
        for i in range(max(3, runs // 2)):
            cold = BundleCache(store, scratch / f"cache-{i}")
            fetch.append(timed(lambda cold=cold, i=i: cold.checkout(refs["big"], scratch / f"first-{i}")))
        cache = BundleCache(store, scratch / "cache")
        kinds = ("big", "small", "tools_big", "tools_small", "cp_big", "cp_small", "read_big", "read_small", "hash")
        checkout: dict[str, list[float]] = {k: [] for k in kinds}
        for name in ("big", "small"):
            archive = cache.fetch(refs[name])
            tree = cache.checkout(refs[name], scratch / f"tree-{name}")  # an extracted tree, for cp -r
            for i in range(runs + 1):
                into, plain, copy = (scratch / f"{kind}-{name}-{i}" for kind in ("attempt", "tools", "cp"))
                plain.mkdir()
                jobs = {
                    "ours": lambda ref=refs[name], into=into: cache.checkout(ref, into),
                    "tools": lambda archive=archive, plain=plain: tools_checkout(archive, plain),
                    "cp": lambda tree=tree, copy=copy: subprocess.run(["cp", "-r", str(tree), str(copy)], check=True),
                }
                # Rotate who goes first: the second of a round may pay for the first's writeback.
                order = ["ours", "tools", "cp"]
                order = order[i % 3 :] + order[: i % 3]
                took = {k: timed(jobs[k]) for k in order}
                read = timed(lambda ref=refs[name]: cache.read(ref, "deploy.sh"))
                hashed = timed(lambda archive=archive: hashlib.sha256(archive.read_bytes()))  # every use pays it
                if i:
                    checkout[name].append(took["ours"])
                    checkout[f"tools_{name}"].append(took["tools"])
                    checkout[f"cp_{name}"].append(took["cp"])
                    checkout[f"read_{name}"].append(read)
                    if name == "big":
                        checkout["hash"].append(hashed)
                # Copies are deleted at the end: deleting between runs made the next run pay for it.
        return {
            "files": len(listing.entries),
            "bytes": listing.total_bytes,
            "tar_bytes": refs["big"].size,
            "small_files": refs["small"].files,
            "uploaded": uploaded,
            "uploaded_again": again,
            "median": {k: statistics.median(v) for k, v in times.items()},
            "fetch": statistics.median(fetch),
            "checkout": {k: statistics.median(v) for k, v in checkout.items()},
            # The fastest run too: file creation on a busy shared disk stalls now and then.
            "checkout_best": {k: min(v) for k, v in checkout.items()},
        }
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(scratch)], check=False)
        shutil.rmtree(scratch, ignore_errors=True)


# --- the machine and the report ---------------------------------------------------------------


def _busy_seconds() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    import resource

    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def _filesystem(path: str) -> str:
    best, kind = "", "unknown"
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mount, fstype, *_ = line.split()
        if path.startswith(mount) and len(mount) >= len(best):
            best, kind = mount, fstype
    return kind


def machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "?")
    tmp = tempfile.gettempdir()
    cores = len(os.sched_getaffinity(0))
    return f"{cpu}, {cores} cores, Python {platform.python_version()}, temp folder {tmp} on {_filesystem(tmp)}"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.0095 else f"{seconds * 1000:.1f} ms"


def report(r: dict, runs: int, load: dict) -> str:
    m, c, b = r["median"], r["checkout"], r["checkout_best"]
    ratio = m["first"] / m["baseline"]
    verdict = "met" if ratio <= 1.5 else "**missed**"
    small_verdict = "met" if c["small"] < 0.05 else "**missed**"
    big_verdict = "met" if c["big"] < 0.05 else "**missed**"
    return "\n".join(
        [
            f"_Run of {datetime.now(UTC):%Y-%m-%dT%H:%MZ}, {runs} runs each (medians, after a warm-up), {machine()}._",
            "",
            f"A generated service folder in a git repository: {r['files']:,} files, {r['bytes'] / 2**20:.1f} MB "
            f"(a {r['tar_bytes'] / 2**20:.1f} MB canonical tar); the store is a local folder.",
            "",
            "| what | median | vs baseline |",
            "|---|---|---|",
            f"| baseline: `tar --create` of the same file list + `sha256sum` | {ms(m['baseline'])} | 1.00x |",
            f"| pack + upload, first start (listing alone: {ms(m['listing'])}) | {ms(m['first'])} | {ratio:.2f}x |",
            f"| pack + upload, same content again | {ms(m['second'])} | {m['second'] / m['baseline']:.2f}x |",
            f"| (not done) gzip level 1 of the archive, on top of packing | +{ms(m['gzip'])} | "
            f"+{m['gzip'] / m['baseline']:.2f}x |",
            "",
            f"Target (at most 1.5x): {ratio:.2f}x ({verdict}). Bytes uploaded: {r['uploaded']:,} on the first "
            f"start, {r['uploaded_again']:,} on the second (target 0: "
            f"{'met' if r['uploaded_again'] == 0 else '**missed**'}).",
            "",
            "On the worker (every use reads the cached tar into memory, hashes it, and uses those bytes):",
            "",
            "| what | median (fastest) | `sha256sum` + `tar -x` | `cp -r` of an extracted tree |",
            "|---|---|---|---|",
            f"| first use: fetch, verify, check out ({r['files']:,} files) | {ms(r['fetch'])} | | |",
            f"| checkout for a step, {r['files']:,} files, {r['bytes'] / 2**20:.0f} MB | {ms(c['big'])} "
            f"({ms(b['big'])}) | {ms(c['tools_big'])} ({ms(b['tools_big'])}) | {ms(c['cp_big'])} ({ms(b['cp_big'])}) |",
            f"| checkout for a step, small service ({r['small_files']} files) | {ms(c['small'])} "
            f"({ms(b['small'])}) | {ms(c['tools_small'])} ({ms(b['tools_small'])}) | {ms(c['cp_small'])} "
            f"({ms(b['cp_small'])}) |",
            f"| read one file (the service file), {r['files']:,}-file bundle | {ms(c['read_big'])} "
            f"({ms(b['read_big'])}) | | |",
            f"| read one file, small service | {ms(c['read_small'])} ({ms(b['read_small'])}) | | |",
            f"| of each use above: read + SHA-256 of the {r['tar_bytes'] / 2**20:.1f} MB tar | {ms(c['hash'])} "
            f"({ms(b['hash'])}) | | |",
            "",
            f"Target (materialising under 50 ms): the small service {ms(c['small'])} ({small_verdict}); the "
            f"{r['files']:,}-file folder {ms(c['big'])} ({big_verdict}; a step needs a full, writable copy, so it "
            "costs what creating 2,000 files costs, as `tar -x` shows).",
            "",
            f"Machine load while this ran: {load['busy']:.2f} cores busy on average, {load['own']:.2f} of them this "
            f"benchmark, {load['other']:.2f} other work (1-min load average before: {load['before']:.2f}).",
        ]
    )


def save(text: str) -> None:
    results = BENCH / "RESULTS.md"
    content = results.read_text()
    if BEGIN in content and END in content:
        head, rest = content.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        results.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")
    else:
        results.write_text(f"{content.rstrip()}\n\n## 5. Release bundles\n\n{BEGIN}\n{text}\n{END}\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--no-save", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    before, wall, busy, own = os.getloadavg()[0], time.monotonic(), _busy_seconds(), _own_seconds()
    results = measure(args.runs)
    wall, busy, own = time.monotonic() - wall, _busy_seconds() - busy, _own_seconds() - own
    load = {"before": before, "busy": busy / wall, "own": own / wall, "other": max(0.0, busy - own) / wall}
    text = report(results, args.runs, load)
    print("## 5. Release bundles\n\n" + text)
    if not args.no_save:
        save(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
