"""The machine, the console report, and bench/RESULTS.md with its history (kept in bench/results.json)."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from common import BENCH, REPO

RESULTS_MD = BENCH / "RESULTS.md"
RESULTS_JSON = BENCH / "results.json"
KEEP_RUNS = 20
TERRAFORM_BEGIN = "<!-- terraform-step:begin: kept as is by bench/run.py -->"
TERRAFORM_END = "<!-- terraform-step:end -->"
TERRAFORM_PLACEHOLDER = (
    "_Placeholder: the Terraform step benchmark (a release whose step is a `terraform` kind) is added "
    "here by its author. Anything between the markers survives `bench/run.py` rewriting this file._"
)


# --- the machine ----------------------------------------------------------------------------


def _cpuinfo(key: str) -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return float("nan")


def _filesystem(path: str) -> str:
    """The filesystem type holding ``path`` (the dev servers' SQLite lives in the temp dir)."""
    best, kind = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            _, mount, fstype, *_ = line.split()
            if path.startswith(mount) and len(mount) > len(best):
                best, kind = mount, fstype
    except OSError:
        pass
    return kind


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict:
    import tempfile

    from prodline.workers.devserver import temporal_binary

    try:
        cli = subprocess.run([temporal_binary(), "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        cli = ""
    server = re.search(r"Server ([\w.\-]+)", cli)
    cli_version = re.search(r"temporal version ([\w.\-]+)", cli)
    tmp = tempfile.gettempdir()
    return {
        "cpu": _cpuinfo("model name"),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gb": round(_mem_total_gb(), 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "temporalio": _version("temporalio"),
        "pydantic": _version("pydantic"),
        "temporal_cli": cli_version.group(1) if cli_version else "unknown",
        "temporal_server": server.group(1) if server else "unknown",
        "temp_fs": f"{tmp} ({_filesystem(tmp)})",
    }


def machine_line(m: dict) -> str:
    return (
        f"{m['cpu']}, {m['usable_cores']} cores, {m['ram_gb']:g} GB RAM, {m['os']}; Python {m['python']}, "
        f"temporalio {m['temporalio']}, Temporal server {m['temporal_server']} (CLI {m['temporal_cli']}); "
        f"dev-server SQLite in {m['temp_fs']}"
    )


def git() -> dict:
    def out(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = [line for line in out("status", "--porcelain").splitlines() if line and not line[3:].startswith("bench/")]
    return {"commit": out("rev-parse", "--short", "HEAD") or "unknown", "dirty": len(changed)}


def commits_between(old: str, new: str) -> list[str]:
    if not old or old == new or old == "unknown":
        return []
    try:
        out = subprocess.run(
            ["git", "log", "--oneline", f"{old}..{new}"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return out.splitlines()


# --- key figures: what the history and "what changed" compare ---------------------------------


def key_figures(name: str, r: dict) -> dict[str, float]:
    if name == "engine":
        pl, raw = r["batches"]["prodline"], r["batches"]["raw-steps"]
        return {
            "prodline wf/s": pl["throughput"],
            "raw wf/s": raw["throughput"],
            "throughput ratio": r["ratios"]["raw-steps"]["throughput"],
            "p50 ratio": r["ratios"]["raw-steps"]["p50"],
            "throughput ratio vs raw-activities": r["ratios"]["raw-activities"]["throughput"],
            "prodline p50 s": pl["p50"],
        }
    if name == "scale":
        return {
            "p50 s": r["p50"],
            "p95 s": r["p95"],
            "worker peak MB": r["worker_peak_mb"],
            "wall s": r["wall"],
            "wf/s": r["throughput"],
        }
    if name == "cli":
        return {
            "--help ms": 1000 * r["help"],
            "start ms": 1000 * r["prodline_start"],
            "temporal start ms": 1000 * r["temporal_start"],
            "start ratio": r["start_ratio"],
        }
    return {}


def _fmt(value: float) -> str:
    if value != value:  # NaN
        return "n/a"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _ms_or(ms: float, missing: str = "in its workflow task") -> str:
    return missing if ms != ms else f"{ms:.0f} ms"


def _met(target: dict) -> str:
    return "met" if target["met"] else "**missed**"


# --- rendering one benchmark -------------------------------------------------------------------


def _plan(remote: int, local: int) -> str:
    return f"{remote} + {local} local" if local else f"{remote}"


def engine_lines(r: dict) -> list[str]:
    b = r["batches"]
    h = r["history"]
    lines = [
        f"N = {r['n']} workflows per batch, all started at once (after {r['warmup']} warm-up ones), one worker "
        "process each (same options and client), batches one after the other on one embedded server"
        + (
            f", {r['rounds']} rounds (every other one in reverse order); figures are means over the rounds, "
            "ratios in brackets the range over rounds"
            if r.get("rounds", 1) > 1
            else ""
        )
        + ". Latency: start -> close as the server recorded it; throughput: N / (first start -> last close). "
        'The step `apply: "true"` runs `/bin/sh -c true`; the raw activities do nothing.'
        + (
            " Releases take the path of `prodline release start`: the application registered once "
            "(`prodline app apply`), each release resolving its plan on the worker (the registered revision, "
            "the service file from the bundle in the worker's cache), each step in its own copy of the bundle; "
            "the service folder is packed and uploaded once per batch and every release names that bundle "
            "(a start of an unchanged folder re-packs it and uploads nothing: the CLI section measures that)."
            if r.get("release_path") == "bundles"
            else ""
        ),
        "",
        "| batch | activities/wf | wf/s | p50 | p95 | max | wall | worker CPU/wf | server CPU/wf | worker peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, x in b.items():
        if "plan" in x:
            acts = _plan(x["plan"].count("activity"), x["plan"].count("local"))
        elif name.startswith("prodline"):
            acts = _plan(h["activities"], h.get("local_activities", 0))
        else:
            acts = f"{x.get('activities_per_workflow', 0):g}"
        lines.append(
            f"| {name} | {acts} | {x['throughput']:.1f} | {_ms(x['p50'])} | {_ms(x['p95'])} | {_ms(x['max'])} | "
            f"{x['wall']:.1f} s | {x['worker_cpu_ms']:.0f} ms | {x['server_cpu_ms']:.0f} ms | "
            f"{x['worker_peak_mb']:.0f} MB |"
        )
    lines += [
        "",
        "| prodline / baseline | throughput | p50 | p95 | worker CPU | server CPU |",
        "|---|---|---|---|---|---|",
    ]
    for base, x in r["ratios"].items():
        spread = r.get("ratio_spread", {}).get(base) if r.get("rounds", 1) > 1 else None
        thr = f" ({spread['throughput'][0]:.2f}-{spread['throughput'][1]:.2f})" if spread else ""
        p50 = f" ({spread['p50'][0]:.2f}-{spread['p50'][1]:.2f})" if spread else ""
        lines.append(
            f"| {base} | {x['throughput']:.2f}x{thr} | {x['p50']:.2f}x{p50} | {x['p95']:.2f}x | "
            f"{x['worker_cpu']:.2f}x | {x['server_cpu']:.2f}x |"
        )
    for base, x in r.get("fix_ratios", {}).items():
        lines.append(
            f"| {base}, prodline with {r['fix']} | {x['throughput']:.2f}x | {x['p50']:.2f}x | {x['p95']:.2f}x | "
            f"{x['worker_cpu']:.2f}x | {x['server_cpu']:.2f}x |"
        )
    t = r["targets"]
    lines += [
        "",
        f"Targets (vs raw-steps): throughput {t['throughput']['target']}: {t['throughput']['value']:.2f} "
        f"({_met(t['throughput'])}); p50 {t['p50']['target']}: {t['p50']['value']:.2f}x ({_met(t['p50'])}).",
        "",
        f"One release (2 environments, {h['steps']} steps) in its history: {h['events']} events, "
        f"{h['workflow_tasks']} workflow tasks, {h['activities']} activities "
        f"({', '.join(f'{v} {k}' for k, v in h['activities_by_type'].items()) or 'none'}), "
        f"{h.get('local_activities', 0)} local activities "
        f"({', '.join(f'{v} {k}' for k, v in h.get('local_activities_by_type', {}).items()) or 'none'}), "
        f"{h['search_attribute_upserts']} search-attribute upserts; each of its {h['ledger_signals']} "
        "record_deployment calls signals-with-start a ledger workflow (one per service and environment)"
        + (
            f"; under load that cost the ledgers {h['ledger_events_per_release']:.1f} history events and "
            f"{h['ledger_workflow_tasks_per_release']:.1f} workflow tasks per release (signals batch into fewer tasks)."
            if "ledger_events_per_release" in h
            else "."
        ),
        "",
        "Where the time went (mean over a sample of each batch's histories; activities: scheduled -> completed,"
        " local ones run inside a workflow task and count there; workflow tasks: of which waiting in the queue):",
        "",
        "| batch | task | per wf | mean | queued |",
        "|---|---|---|---|---|",
    ]
    for name, x in b.items():
        for task, s in x.get("timings", {}).items():
            lines.append(
                f"| {name} | {task} | {s['count']:g} | {_ms_or(s['total_ms'])} | {_ms_or(s['queue_ms'], '-')} |"
            )
    return lines


def scale_lines(r: dict) -> list[str]:
    t = r["targets"]
    lines = [
        f"{r['releases']} releases ({r['services']} services x {r['versions']} versions, staging -> production, "
        "one no-op step) started at once against one `python -m prodline.cli worker` process.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| completed | {r['completed']}/{r['releases']} ({r['statuses']}, states {r['states']}) |",
        f"| verified (all succeeded, {r['ledgers_checked']} ledgers hold every version) | "
        f"{'yes' if r['verified'] else '**no**: ' + '; '.join(r['ledger_problems'] + r.get('stuck', []))} |",
        f"| latency p50 / p95 / max | {r['p50']:.1f} s / {r['p95']:.1f} s / {r['max']:.1f} s |",
        f"| throughput | {r['throughput']:.1f} releases/s |",
        f"| total wall time (first start -> all closed seen) | {r['wall']:.1f} s (starting all: {r['start_phase']:.1f} s) |",
        f"| worker peak RSS (VmHWM) | {r['worker_peak_mb']:.0f} MB (idle {r['worker_idle_mb']:.0f} MB); target "
        f"{t['worker_peak_mb']['target']} MB: {_met(t['worker_peak_mb'])} |",
        f"| worker / server CPU | {r['worker_cpu_s']:.0f} s / {r['server_cpu_s']:.0f} s "
        f"({1000 * r['worker_cpu_s'] / r['releases']:.0f} / {1000 * r['server_cpu_s'] / r['releases']:.0f} ms per release) |",
        f"| server peak RSS | {r['server_peak_mb']:.0f} MB |",
    ]
    if r.get("timings"):
        lines += ["", "Where a release's time went (sample of 20; as in the engine table):", ""]
        lines += ["| task | per release | mean | queued |", "|---|---|---|---|"]
        lines += [
            f"| {task} | {s['count']:g} | {_ms_or(s['total_ms'])} | {_ms_or(s['queue_ms'], '-')} |"
            for task, s in r["timings"].items()
        ]
    return lines


def cli_lines(r: dict) -> list[str]:
    t = r["targets"]
    i = r["imports"]
    lines = [
        f"Medians of {r['runs']} fresh processes each (after one warm-up); the two starts are interleaved and "
        "identical (input JSON, ID, policies, search attributes, memo, summary); no worker polls the release queue"
        + (
            " (one worker, on a queue of its own, answers for the registered application that `release start` "
            "checks against; the service folder is packed on every start and uploaded by the first only)."
            if "prepare" in r.get("phases", {})
            else "."
        ),
        "",
        "| command | median | target |",
        "|---|---|---|",
        f"| `python -c pass` (interpreter floor) | {_ms(r['python_floor'])} | |",
        f"| `prodline --help` | {_ms(r['help'])} | {t['help']['target']}: {_met(t['help'])} |",
        f"| `prodline release start FILE --version V` | {_ms(r['prodline_start'])} | |",
        f"| `temporal workflow start ...` (same start) | {_ms(r['temporal_start'])} | |",
        f"| ratio prodline / temporal | {r['start_ratio']:.2f}x | {t['start_ratio']['target']}: "
        f"{_met(t['start_ratio'])} |",
        "",
        (
            "Phases of `prodline release start` (bench/cliphases.py, medians, fresh interpreter): "
            + _phases(r["phases"])
            + "."
            if r["phases"]
            else f"Phase breakdown failed: {r.get('phases_error', '')}"
        ),
        "",
        f"`python -X importtime` of the start: {i['total_ms']:.0f} ms of imports (importtime inflates it). "
        "Top-level imports (cumulative): "
        + ", ".join(f"`{x['module']}` {x['cum_ms']:.0f} ms" for x in i["top_level"][:5])
        + ".",
        "",
        "| prodline module | imports | cumulative |",
        "|---|---|---|",
    ]
    lines += [f"| `{x['by']}` | `{x['module']}` | {x['cum_ms']:.0f} ms |" for x in i["pulled_by_prodline"][:8]]
    lines += [
        "",
        "Self time by package: " + ", ".join(f"{k} {v:.0f} ms" for k, v in i["by_package"].items()) + ".",
        "Heaviest single modules (self): "
        + ", ".join(f"`{x['module']}` {x['self_ms']:.0f} ms" for x in i["heaviest_self"][:6])
        + ".",
    ]
    return lines


def _phases(phases: dict[str, float]) -> str:
    """``prepare 40 ms (query revision 5 ms, pack 20 ms, ...)``: the parts of a phase after it."""
    parts: list[str] = []
    for key, value in phases.items():
        if key == "uploaded_bytes" or key.startswith("prepare_"):
            continue
        text = f"{key.replace('_', ' ')} {_ms(value)}"
        inner = [
            f"{k.removeprefix(key + '_').replace('_', ' ')} {_ms(v)}"
            for k, v in phases.items()
            if k.startswith(key + "_") and k != "uploaded_bytes"
        ]
        if key == "prepare" and "uploaded_bytes" in phases:
            inner.append(f"{phases['uploaded_bytes']:.0f} bytes uploaded")
        parts.append(text + (f" ({', '.join(inner)})" if inner else ""))
    return ", ".join(parts)


def contention_line(r: dict) -> str:
    c = r.get("contention")
    if not c:
        return ""
    warn = " **Other work competed for the CPU: figures are noisier than usual.**" if c["other_cores"] > 0.25 else ""
    return (
        f"\nMachine load while this ran: {c['busy_cores']:.2f} cores busy on average, {c['own_cores']:.2f} of them "
        f"this benchmark's processes, {c['other_cores']:.2f} other work (1-min load average before: "
        f"{c['load_before']:.2f}).{warn}"
    )


RENDER = {"engine": engine_lines, "scale": scale_lines, "cli": cli_lines}
TITLES = {"engine": "1. Engine overhead", "scale": "2. Scale", "cli": "3. CLI"}


# --- history and the file ------------------------------------------------------------------------


def load_runs() -> list[dict]:
    try:
        return json.loads(RESULTS_JSON.read_text())["runs"]
    except (OSError, ValueError, KeyError):
        return []


def previous_for(runs: list[dict], name: str, mode: str) -> dict | None:
    """The latest earlier run that measured ``name`` in ``mode``."""
    for run in reversed(runs):
        if name in run["benchmarks"] and run["mode"] == mode:
            return run
    return None


def changes(runs: list[dict], current: dict) -> list[str]:
    lines = []
    for name, result in current["benchmarks"].items():
        before = previous_for(runs, name, current["mode"])
        if before is None:
            lines.append(f"- {TITLES[name]}: first {current['mode']} run.")
            continue
        now, then = key_figures(name, result), key_figures(name, before["benchmarks"][name])
        deltas = ", ".join(
            f"{k} {_fmt(then[k])} -> {_fmt(v)} ({(v / then[k] - 1) * 100:+.0f}%)" for k, v in now.items() if then.get(k)
        )
        lines.append(f"- {TITLES[name]} (vs {before['date'][:16]}, {before['git']['commit']}): {deltas}.")
    commits = commits_between(
        next((r["git"]["commit"] for r in reversed(runs)), ""),
        current["git"]["commit"],
    )
    if commits:
        shown = "; ".join(commits[:8]) + (f"; and {len(commits) - 8} more" if len(commits) > 8 else "")
        lines.append(f"- Commits since the previous run: {shown}.")
    elif runs:
        lines.append("- No commits since the previous run.")
    previous_code = next((r["git"].get("code") for r in reversed(runs)), None)
    if previous_code and current["git"].get("code") and previous_code != current["git"]["code"]:
        lines.append(
            f"- prodline's code changed since the previous run (sources {previous_code} -> {current['git']['code']})."
        )
    elif previous_code:
        lines.append(f"- Same prodline sources as the previous run ({previous_code}).")
    if current["git"]["dirty"]:
        lines.append(f"- Measured with {current['git']['dirty']} uncommitted change(s) outside bench/.")
    return lines


def _terraform_section() -> str:
    try:
        text = RESULTS_MD.read_text()
    except OSError:
        return TERRAFORM_PLACEHOLDER
    if TERRAFORM_BEGIN in text and TERRAFORM_END in text:
        return text.split(TERRAFORM_BEGIN, 1)[1].split(TERRAFORM_END, 1)[0].strip("\n")
    return TERRAFORM_PLACEHOLDER


# Sections this module writes; any other `## ...` section of RESULTS.md (another benchmark's,
# written by its own script) is kept as it is, after the Terraform one.
_OWN_SECTIONS = {
    "What changed since the previous run",
    *TITLES.values(),
    "4. Terraform step",
    "History",
}


def _other_sections() -> list[str]:
    try:
        text = RESULTS_MD.read_text()
    except OSError:
        return []
    kept = []
    for chunk in re.split(r"(?m)^(?=## )", text)[1:]:
        title = chunk.splitlines()[0].removeprefix("## ").strip()
        if title not in _OWN_SECTIONS:
            kept.append(chunk.rstrip("\n"))
    return kept


def save(current: dict) -> None:
    runs = load_runs()
    what_changed = changes(runs, current)
    current = dict(current, changes=what_changed)
    runs = [*runs, current][-KEEP_RUNS:]
    # Other benchmarks keep their own keys in the same file (bench/approve.py: "approve"): keep them.
    saved = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {}
    RESULTS_JSON.write_text(json.dumps({**saved, "runs": runs}, indent=1, default=str) + "\n")
    RESULTS_MD.write_text(render(runs))


def render(runs: list[dict]) -> str:
    last = runs[-1]
    out = [
        "# prodline benchmarks",
        "",
        "Written by `python bench/run.py` (`make bench`; `--quick` for a smaller N, `--only engine|scale|cli`). "
        "Each benchmark starts its own headless embedded Temporal dev server (SQLite in a temp dir) on a free "
        "port. Raw figures of every run are in `bench/results.json`; edit only the Terraform section here.",
        "",
        f"Last run: {last['date'][:19]}Z, commit {last['git']['commit']}"
        + (f" (sources {last['git']['code']})" if last["git"].get("code") else "")
        + f", {last['mode']} mode, "
        f"{last['seconds']:.0f} s in all.",
        "",
        f"Machine: {machine_line(last['machine'])}.",
        "",
        "## What changed since the previous run",
        "",
        *last["changes"],
        "",
    ]
    for name in ("engine", "scale", "cli"):
        # Full-size figures when there are any; a quick run does not replace them.
        source = next((r for r in reversed(runs) if name in r["benchmarks"] and r["mode"] == "full"), None) or next(
            (r for r in reversed(runs) if name in r["benchmarks"]), None
        )
        out += [f"## {TITLES[name]}", ""]
        if source is None:
            out += ["Not measured yet.", ""]
            continue
        out += [f"_{source['mode']} run of {source['date'][:19]}Z, commit {source['git']['commit']}._", ""]
        if source["machine"] != last["machine"]:
            out += [f"_Machine: {machine_line(source['machine'])}._", ""]
        out += [*RENDER[name](source["benchmarks"][name]), contention_line(source["benchmarks"][name]), ""]
    out += ["## 4. Terraform step", "", TERRAFORM_BEGIN, _terraform_section(), TERRAFORM_END, ""]
    for section in _other_sections():
        out += [section, ""]
    out += [
        "## History",
        "",
        "| date | commit, sources | mode | engine thr ratio | engine p50 ratio | scale p50 / p95 | scale worker MB | "
        "scale wall | --help | start vs temporal |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in reversed(runs[-10:]):
        b = run["benchmarks"]
        e, s, c = (key_figures(n, b[n]) if n in b else None for n in ("engine", "scale", "cli"))
        out.append(
            f"| {run['date'][:16]} | {run['git']['commit']}{'+' if run['git']['dirty'] else ''} "
            f"{run['git'].get('code', '')} | {run['mode']} | "
            + (f"{e['throughput ratio']:.2f} | {e['p50 ratio']:.2f}x" if e else "- | -")
            + " | "
            + (
                f"{s['p50 s']:.1f} s / {s['p95 s']:.1f} s | {s['worker peak MB']:.0f} | {s['wall s']:.0f} s"
                if s
                else "- | - | -"
            )
            + " | "
            + (f"{c['--help ms']:.0f} ms | {c['start ms']:.0f} / {c['temporal start ms']:.0f} ms" if c else "- | -")
            + " |"
        )
    out += [
        "",
        "(`+`: uncommitted changes outside bench/ when measured; sources: digest of the prodline code measured.)",
        "",
    ]
    return "\n".join(out)


def now() -> str:
    return datetime.now(UTC).isoformat()


def console(current: dict) -> str:
    """The run's report for the terminal: machine, then each benchmark's figures and ratios."""
    out = [
        f"Machine: {machine_line(current['machine'])}",
        f"Commit {current['git']['commit']}, {current['mode']} mode",
        "",
    ]
    for name, result in current["benchmarks"].items():
        out += [f"== {TITLES[name]} ==", *RENDER[name](result), contention_line(result), ""]
    return "\n".join(out)


if __name__ == "__main__":  # re-render RESULTS.md from results.json
    runs = load_runs()
    if not runs:
        sys.exit("no runs in bench/results.json")
    RESULTS_MD.write_text(render(runs))
