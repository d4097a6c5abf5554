"""Benchmark 7, approving: ``prodline approve`` against ``temporal workflow update execute`` for the same Update.

One embedded dev server, one ``prodline worker`` process, two registered
applications whose production waits for two approvers (alice and bob): one
takes asserted names (``verify: none``), one signed decisions only
(``verify: ssh``). One release of each is started and left waiting there.
alice's first approval counts; every later one is refused ("alice already
approved") but takes the same path as a counted one (the Update accepted,
judged, recorded, completed), so N decisions are timed on one waiting release.

Timed from process start to exit (the verdict printed), N times each, interleaved
(A, B, P, S, BS, A, B, ...) after one unmeasured round so that machine noise hits all:

- A  ``prodline approve ID --as alice --environment production --yes``
- B  ``temporal workflow update execute --name decision --input <Decision JSON>``, the
  same Update (update ID and run ID given, as prodline does); the baseline.
- P  the Temporal Python SDK alone (``python -c``: connect, ``execute_update``), the floor of a Python client.
- S  ``prodline approve ... --key KEY`` on the ``verify: ssh`` release (in-process signing).
- BS the temporal CLI sending a decision signed beforehand (not timed), the baseline for S.

Then what A is made of: fresh interpreters doing the CLI's steps one by one
(imports, connect, the status read, the Update), and with one client reused in this
process the status read's two calls (describe, query) and the Update round trip.
The signing itself is timed apart: in process (an unencrypted ed25519 key file) and
through ``ssh-keygen -Y sign`` with an ssh-agent key (a ``.pub``), and the import
of the signing modules in a fresh interpreter. What each kind of client imports is
timed inside fresh interpreters (the SDK alone, with the pydantic converter, prodline's),
to tell pydantic's share of A - P from prodline's own; and the run is compared with the
previous one saved (``results.json``), each with its own run's ratios.

``--save`` writes section 7 of bench/RESULTS.md and appends the run to the
``approve`` list of bench/results.json (other keys kept).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from clibench import parse_importtime, summarize_imports
from common import (
    VENV_BIN,
    artifact_folders,
    client_for,
    dev_server,
    log,
    median,
    percentile,
    prodline_worker,
    ratio,
    register,
    save_section,
    unique,
    wait_for_pollers,
)
from temporalio.client import Client

from prodline.artifacts.store import open_store
from prodline.client import DecisionTarget, ReleaseClient
from prodline.client.prepare import prepare
from prodline.client.signatures import Signer
from prodline.contracts import DECIDE_UPDATE, Decision, Phase, Verdict
from prodline.errors import ProdlineError
from prodline.identity import signing
from prodline.workers.devserver import temporal_binary

TARGET_RATIO = 1.5  # prodline approve / temporal workflow update execute, signing apart
ENVIRONMENT = "production"

APPLICATION = """\
application: {application}
people:
  alice: {alice}
  bob: {bob}
environments:
  - name: staging
  - name: production
    verify: {verify}
    preconditions:
      - approval: {{approvers: [alice, bob], min_approvers: 2}}
"""

SERVICE = """\
service: svc
application: {application}
steps:
  - name: deploy
    command: {{apply: "true"}}
"""

# The CLI's steps one by one, in a fresh interpreter, through the CLI's own modules; seconds as JSON.
PHASES = r"""
import time
began = mark = time.perf_counter()
import asyncio, json, sys
release_id, address, queue = sys.argv[1:4]
phases = {}
def lap(name):
    global mark
    now = time.perf_counter()
    phases[name] = now - mark
    mark = now
from prodline.cli.main import build_parser
args = build_parser().parse_args(
    ["approve", release_id, "--as", "alice", "--environment", "production", "--yes",
     "--address", address, "--task-queue", queue])
lap("import_cli_and_parse")
import prodline.cli.approve as command
from prodline.client import ReleaseClient
from prodline.contracts import Verdict
lap("import_command")
async def talk():
    client = await ReleaseClient.connect(args.address, "default", args.task_queue)
    lap("connect")
    target = await client.decision_target(release_id, "production")
    lap("decision_target")
    record = await client.decide(target, Verdict.approve, by="alice")
    command.verdict_line(record)
    lap("decide_update")
asyncio.run(talk())
lap("event_loop_close")
phases["in_process"] = time.perf_counter() - began
print(json.dumps(phases), flush=True)
import os
os._exit(0)  # as the CLI ends (prodline.cli.main): no interpreter teardown
"""

# The least a Python client can do: the Temporal SDK alone sending the same Update (JSON payload).
SDK_ONLY = r"""
import asyncio, json, os, sys
from temporalio.client import Client
address, workflow_id, run_id, update_id, payload = sys.argv[1:6]
async def main():
    client = await Client.connect(address, namespace="default")
    handle = client.get_workflow_handle(workflow_id, run_id=run_id or None)
    print(json.dumps(await handle.execute_update("decision", json.loads(payload), id=update_id)), flush=True)
asyncio.run(main())
os._exit(0)
"""

# What each kind of client must import before it sends a byte, timed inside a fresh interpreter
# (its start-up apart): the SDK alone (what P imports), the SDK with the pydantic converter and
# one model built (the least any client sending pydantic payloads imports), and what A imports.
IMPORT_FLOORS = {
    "temporalio.client (P)": "import temporalio.client",
    "temporalio.client + pydantic converter + one model": (
        "import temporalio.client, temporalio.contrib.pydantic, temporalio.envconfig\n"
        "from pydantic import BaseModel\n"
        "class One(BaseModel):\n    x: int"
    ),
    "prodline.cli.main + prodline.cli.approve (A)": "import prodline.cli.main, prodline.cli.approve",
}
TIMED_IMPORT = (
    "import time\nt = time.perf_counter()\nexec(compile({code!r}, 'imports', 'exec'))\nprint(time.perf_counter() - t)"
)

SIGNING_IMPORT = (
    "import time, prodline.cli.approve; t = time.perf_counter(); import prodline.identity.signing; "
    "print(time.perf_counter() - t)"
)


def _run(argv: list[str], env: dict[str, str], expect: str = "") -> tuple[float, str]:
    """Wall seconds of one process, start to exit, and its stdout; an error unless it printed ``expect``."""
    began = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - began
    if expect not in result.stdout or (result.returncode != 0 and not expect):
        raise RuntimeError(
            f"{' '.join(argv[:3])}... exited {result.returncode} without {expect!r}: "
            f"{(result.stdout + result.stderr).strip()[-500:]}"
        )
    return elapsed, result.stdout


def stats(values: list[float]) -> dict:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "mean": sum(values) / len(values) if values else float("nan"),
    }


@contextlib.contextmanager
def ssh_agent(folder: Path) -> Iterator[str]:
    """An ssh-agent of our own on a socket in ``folder`` (never the user's), stopped on the way out."""
    sock = folder / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-a", str(sock), "-D"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            if agent.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ssh-agent did not start: {agent.stderr.read().decode() if agent.stderr else ''}")
            time.sleep(0.02)
        yield str(sock)
    finally:
        agent.terminate()
        try:
            agent.wait(timeout=5)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()


def _temporal_update_argv(address: str, target: DecisionTarget, decision: Decision) -> list[str]:
    """``temporal workflow update execute`` sending the Update ReleaseClient.decide sends (pydantic JSON)."""
    argv = [temporal_binary(), "workflow", "update", "execute", "--address", address, "--namespace", "default"]
    argv += ["--workflow-id", target.release_id, "--name", DECIDE_UPDATE, "--update-id", decision.request_id]
    if target.run_id:
        argv += ["--run-id", target.run_id]
    return [*argv, "--input", decision.model_dump_json()]


def _sdk_only_argv(address: str, target: DecisionTarget, decision: Decision) -> list[str]:
    payload = decision.model_dump_json()
    return [sys.executable, "-c", SDK_ONLY, address, target.release_id, target.run_id, decision.request_id, payload]


def _decision(signed=None, comment: str = "") -> Decision:
    return Decision(
        request_id=uuid.uuid4().hex,
        environment=ENVIRONMENT,
        by="alice",
        verdict=Verdict.approve,
        comment=comment,
        signed=signed,
    )


async def _waiting(releases: ReleaseClient, release_id: str, timeout: float = 120) -> DecisionTarget:
    """The release's decision target once it waits in production."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            target = await releases.decision_target(release_id, ENVIRONMENT)
            if target.status.environment(ENVIRONMENT).phase is Phase.waiting:
                return target
        except ProdlineError:
            pass  # not resolved or not answering yet
        if time.monotonic() > deadline:
            raise RuntimeError(f"{release_id} does not wait in {ENVIRONMENT} after {timeout:.0f}s")
        await asyncio.sleep(0.3)


async def _start_waiting(client: Client, queue: str, folder: Path, verify: str, keys: dict[str, str]) -> str:
    """Register an application (production behind two approvers) and start one release of it."""
    application = unique(f"appr{verify}")
    folder.mkdir(parents=True)
    (folder / "prodline.yaml").write_text(APPLICATION.format(application=application, verify=verify, **keys))
    (folder / "svc").mkdir()
    service_file = folder / "svc" / "prodline.service.yaml"
    service_file.write_text(SERVICE.format(application=application))
    await register(client, queue, folder / "prodline.yaml")
    prepared = await prepare(client, service_file, "1.0.0", {}, "bench", open_store())
    started = await ReleaseClient(client, queue).start(prepared.request)
    return started.release_id


async def measure(n: int, phase_runs: int, before: Path | None = None) -> dict:
    prodline = str(VENV_BIN / "prodline")
    async with dev_server("approve") as server, artifact_folders("approve"):
        client = await client_for(server)
        queue = unique("bench-approve-")
        with tempfile.TemporaryDirectory(prefix="prodline-bench-approve-") as tmp:
            folder = Path(tmp)
            alice_key, bob_key = folder / "id_alice", folder / "id_bob"
            keys = {"alice": signing.generate(alice_key, "alice"), "bob": signing.generate(bob_key, "bob")}
            # alice's second key, made and held as people do: ssh-keygen, loaded in ssh-agent.
            agent_key = folder / "id_alice_agent"
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "alice", "-f", str(agent_key)], check=True
            )
            keys["alice"] = json.dumps([keys["alice"], Path(f"{agent_key}.pub").read_text().strip()])
            env = dict(
                os.environ,
                TEMPORAL_ADDRESS=server.address,
                TEMPORAL_NAMESPACE="default",
                PRODLINE_TASK_QUEUE=queue,
                PRODLINE_USER="bench",
            )
            worker = prodline_worker(server.address, queue, folder / "worker.log").start()
            try:
                await wait_for_pollers(client, queue, worker)
                releases = ReleaseClient(client, queue)
                plain_id = await _start_waiting(client, queue, folder / "plain", "none", keys)
                signed_id = await _start_waiting(client, queue, folder / "signed", "ssh", keys)
                plain = await _waiting(releases, plain_id)
                signed = await _waiting(releases, signed_id)
                log(f"{plain_id} and {signed_id} wait in {ENVIRONMENT}; {n} rounds of A, B, P, S, BS")
                result = await _rounds(n, server.address, env, prodline, plain, signed, alice_key, before)
                worker.check_alive()
                result["phases"] = _phases(phase_runs, plain_id, server.address, queue, env)
                result["reused_client"] = await _reused(releases, plain_id, n)
                result["imports"] = _imports(env)
                result["import_floors"] = _import_floors(env, max(9, phase_runs))
                signer = Signer(alice_key, by="alice")
                with ssh_agent(folder) as sock:
                    subprocess.run(
                        ["ssh-add", "-q", str(agent_key)],
                        env=dict(env, SSH_AUTH_SOCK=sock),
                        check=True,
                        capture_output=True,
                    )
                    result["signing"] = _signing(n, signed, signer, alice_key, agent_key, sock)
                    result["signing"]["import_fresh_ms"] = 1000 * median(
                        [float(_run([sys.executable, "-c", SIGNING_IMPORT], env)[1]) for _ in range(5)]
                    )
                final = await releases.decision_target(plain_id, ENVIRONMENT)
                result["decisions_on_plain_release"] = len(final.status.decisions)
                result["counted_on_plain_release"] = sum(d.accepted for d in final.status.decisions)
                worker.check_alive()
            finally:
                worker.stop()
    result["python_floor"] = stats([_run([sys.executable, "-c", "pass"], os.environ.copy())[0] for _ in range(n)])
    a, b = result["timings"]["A"], result["timings"]["B"]
    s, bs = result["timings"]["S"], result["timings"]["BS"]
    sign_p50 = result["signing"]["in_process_ms"]["p50"] / 1000
    result["ratios"] = {
        "A/B p50": ratio(a["p50"], b["p50"]),
        "A/B p90": ratio(a["p90"], b["p90"]),
        "P/B p50": ratio(result["timings"]["P"]["p50"], b["p50"]),
        "A/P p50": ratio(a["p50"], result["timings"]["P"]["p50"]),
        "S/BS p50": ratio(s["p50"], bs["p50"]),
        "S/BS p90": ratio(s["p90"], bs["p90"]),
        "(S - signing)/BS p50": ratio(s["p50"] - sign_p50, bs["p50"]),
    }
    if "A0" in result["timings"]:
        a0 = result["timings"]["A0"]
        result["ratios"].update(
            {"A0/P p50": ratio(a0["p50"], result["timings"]["P"]["p50"]), "A/A0 p50": ratio(a["p50"], a0["p50"])}
        )
    result["targets"] = {
        "A/B p50": {"target": f"<= {TARGET_RATIO}", "value": result["ratios"]["A/B p50"]},
        "(S - signing)/BS p50": {"target": f"<= {TARGET_RATIO}", "value": result["ratios"]["(S - signing)/BS p50"]},
    }
    for figure in result["targets"].values():
        figure["met"] = figure["value"] <= TARGET_RATIO
    return result


async def _rounds(
    n: int,
    address: str,
    env: dict[str, str],
    prodline: str,
    plain: DecisionTarget,
    signed: DecisionTarget,
    key: Path,
    before: Path | None = None,
) -> dict:
    """N interleaved rounds of the processes (one more first, unmeasured: it counts alice's approvals);
    with ``before`` (the source tree of an earlier version), A0: that version's ``prodline approve``."""
    args = ["approve", "--as", "alice", "--environment", ENVIRONMENT, "--yes"]
    approve = [prodline, *args]
    signer = Signer(key, by="alice")
    times: dict[str, list[float]] = {"A": [], "B": [], "P": [], "S": [], "BS": []}
    if before is not None:
        times["A0"] = []
    outputs: dict[str, str] = {}
    for i in range(n + 1):
        runs = {
            "A": ([*approve, plain.release_id], "approve by alice"),
            "B": (_temporal_update_argv(address, plain, _decision()), "accepted:"),
            "P": (_sdk_only_argv(address, plain, _decision()), '"accepted"'),
            # A comment of its own per signed decision: two documents signed in the same second would
            # otherwise be the same, and the second refused as a reused signature (before verifying it).
            "S": ([*approve, signed.release_id, "--key", str(key), "--comment", f"s{i}"], "approve by alice (ssh"),
            # Signed here, untimed: BS is the Update with a signature in it, nothing else.
            "BS": (
                _temporal_update_argv(
                    address,
                    signed,
                    _decision(signer.sign(signed.document(Verdict.approve, f"bs{i}", signer)), f"bs{i}"),
                ),
                "verified:ssh",
            ),
        }
        if before is not None:  # the console script's own code, the package found first in ``before``
            entry = "import sys; from prodline.cli.main import entrypoint; sys.argv[0] = 'prodline'; entrypoint()"
            runs["A0"] = ([sys.executable, "-c", entry, *args, plain.release_id], "approve by alice")
        for name, (argv, expect) in runs.items():
            elapsed, out = _run(argv, dict(env, PYTHONPATH=str(before)) if name == "A0" else env, expect)
            if i:  # the first round warms up (and is the one whose approvals count)
                times[name].append(elapsed)
                outputs[name] = out.strip()[-300:]
    return {"n": n, "timings": {name: stats(values) for name, values in times.items()}, "last_output": outputs}


def _phases(runs: int, release_id: str, address: str, queue: str, env: dict[str, str]) -> dict:
    """Medians of A's steps in fresh interpreters; ``startup_and_exit``: process wall minus the steps."""
    samples = []
    for _ in range(runs):
        wall, out = _run([sys.executable, "-c", PHASES, release_id, address, queue], env)
        phases = json.loads(out.strip().splitlines()[-1])
        phases["startup_and_exit"] = wall - phases["in_process"]
        phases["process_wall"] = wall
        samples.append(phases)
    return {key: median([s[key] for s in samples]) for key in samples[0]}


def _imports(env: dict[str, str]) -> dict:
    """One ``-X importtime`` of what ``prodline approve`` imports, summed by package (self times)."""
    argv = [sys.executable, "-X", "importtime", "-c", "import prodline.cli.main, prodline.cli.approve"]
    profile = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=True)
    return summarize_imports(parse_importtime(profile.stderr))


def _import_floors(env: dict[str, str], runs: int) -> dict[str, float]:
    """Medians (seconds) of each IMPORT_FLOORS entry in ``runs`` fresh interpreters, interleaved."""
    samples: dict[str, list[float]] = {name: [] for name in IMPORT_FLOORS}
    for _ in range(runs):
        for name, code in IMPORT_FLOORS.items():
            samples[name].append(float(_run([sys.executable, "-c", TIMED_IMPORT.format(code=code)], env)[1]))
    return {name: median(values) for name, values in samples.items()}


async def _reused(releases: ReleaseClient, release_id: str, n: int) -> dict:
    """A's calls with one client kept (no connect): describe, the status query, the Update round trip."""
    spent: dict[str, list[float]] = {"describe (outcome)": [], "status query (live_status)": [], "decision_target": []}
    spent["decide (Update round trip)"] = []
    target = await releases.decision_target(release_id, ENVIRONMENT)
    for _ in range(n):
        for name, call in (
            ("describe (outcome)", lambda: releases.outcome(release_id)),
            ("status query (live_status)", lambda: releases.live_status(release_id)),
            ("decision_target", lambda: releases.decision_target(release_id, ENVIRONMENT)),
            ("decide (Update round trip)", lambda: releases.decide(target, Verdict.approve, by="alice")),
        ):
            began = time.perf_counter()
            await call()
            spent[name].append(time.perf_counter() - began)
    return {name: stats(values) for name, values in spent.items()}


def _signing(n: int, target: DecisionTarget, signer: Signer, key: Path, agent_key: Path, sock: str) -> dict:
    """``signing.sign`` of a real decision document: in process (key file) and by ssh-keygen with an agent key."""
    text = target.document(Verdict.approve, "", signer).text()
    in_process, agent = [], []
    saved = os.environ.get("SSH_AUTH_SOCK")
    os.environ["SSH_AUTH_SOCK"] = sock  # ssh-keygen finds the agent here
    try:
        for _ in range(n):
            began = time.perf_counter()
            signing.sign(text, key, prompt=False)
            in_process.append(1000 * (time.perf_counter() - began))
            began = time.perf_counter()
            signing.sign(text, Path(f"{agent_key}.pub"), prompt=False)
            agent.append(1000 * (time.perf_counter() - began))
    finally:
        if saved is None:
            os.environ.pop("SSH_AUTH_SOCK", None)
        else:
            os.environ["SSH_AUTH_SOCK"] = saved
    return {"document_bytes": len(text.encode()), "in_process_ms": stats(in_process), "ssh_agent_ms": stats(agent)}


# --- the report ---------------------------------------------------------------------------------

BEGIN = "<!-- approve:begin: written by bench/approve.py --save -->"
END = "<!-- approve:end -->"
TITLE = "## 7. Approving"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def lines(r: dict, header: str) -> list[str]:
    t, ratios, phases, reused, sig = r["timings"], r["ratios"], r["phases"], r["reused_client"], r["signing"]
    met = lambda name: "met" if r["targets"][name]["met"] else "**missed**"  # noqa: E731
    out = [
        header,
        "",
        "A release waits for two approvers (alice, bob) in production; alice's first approval counts and every "
        'later one is refused ("alice already approved") along the same path: the Update accepted, judged, '
        f"recorded and completed. N = {r['n']} processes of each kind, start to exit, interleaved A, B, P, S, BS "
        "after one unmeasured round, one embedded dev server and one `prodline worker` (verification runs in "
        "the workflow, on the worker).",
        "",
        "| process | p50 | p90 | mean |",
        "|---|---|---|---|",
    ]
    names = {
        "A": "A `prodline approve ID --as alice --environment production --yes` (`verify: none`)",
        "B": "B `temporal workflow update execute --name decision --input <Decision JSON>` (same Update)",
        "P": "P the Temporal Python SDK alone sending the same Update (`python -c`: connect, execute_update)",
        "S": "S `prodline approve ... --key KEY` (`verify: ssh`, in-process ed25519 signing)",
        "BS": "BS `temporal workflow update execute` with a decision signed beforehand",
    }
    if "A0" in t:
        names["A0"] = f"A0 the same `prodline approve`, code of {r.get('before', 'an earlier version')}"
    for key, name in names.items():
        out.append(f"| {name} | {_ms(t[key]['p50'])} | {_ms(t[key]['p90'])} | {_ms(t[key]['mean'])} |")
    floor = r["python_floor"]
    out += [
        f"| `python -c pass` (the interpreter alone) | {_ms(floor['p50'])} | {_ms(floor['p90'])} "
        f"| {_ms(floor['mean'])} |",
        "",
        f"Ratios: A/B {ratios['A/B p50']:.2f}x at p50, {ratios['A/B p90']:.2f}x at p90 (of which the Python SDK "
        f"alone, P/B, {ratios['P/B p50']:.2f}x, and prodline on top of it, A/P, {ratios['A/P p50']:.2f}x); S/BS "
        f"{ratios['S/BS p50']:.2f}x at p50 ({ratios['S/BS p90']:.2f}x at p90), {ratios['(S - signing)/BS p50']:.2f}x "
        "with the in-process signing taken out.",
        "",
        f"Target (at most {TARGET_RATIO}x, signing apart): unsigned {ratios['A/B p50']:.2f}x ({met('A/B p50')}); "
        f"signed {ratios['(S - signing)/BS p50']:.2f}x ({met('(S - signing)/BS p50')}).",
        "",
        "Where the difference goes (p50s): "
        f"prodline over the bare SDK (A - P) {_ms(t['A']['p50'] - t['P']['p50'])}, nearly all imports of its own "
        f"(the status read and the Update together take {_ms(phases['decision_target'] + phases['decide_update'])} "
        f"in a fresh process, where P sends the Update alone); the Python SDK over the Go CLI (P - B) "
        f"{_ms(t['P']['p50'] - t['B']['p50'])}, the interpreter and `import temporalio` before a byte is sent. "
        "A Python client cannot get below P here, so the target against the Go CLI needs either a client that "
        "does not start Python with the Temporal SDK, or a target against P.",
        "",
        *_same_run_before(r),
        *_floor_lines(r),
        *_before_lines(r),
        f"Where A's time goes: medians of {r['phase_runs']} fresh interpreters doing "
        "the CLI's steps through its own modules (`startup_and_exit`: the process's wall time minus the steps):",
        "",
        "| step | median |",
        "|---|---|",
    ]
    for key in (
        "startup_and_exit",
        "import_cli_and_parse",
        "import_command",
        "connect",
        "decision_target",
        "decide_update",
        "event_loop_close",
        "process_wall",
    ):
        out.append(f"| {key} | {_ms(phases[key])} |")
    imports = r["imports"]
    out += [
        "",
        f"What `import prodline.cli.approve` costs, by package (`-X importtime`, one run, self times summed; "
        f"{imports['total_ms']:.0f} ms in all under importtime's own overhead): "
        + ", ".join(f"{name} {ms:.0f} ms" for name, ms in list(imports["by_package"].items())[:8])
        + ".",
        "",
        f"With one client kept (no connect, no imports), {r['n']} calls each:",
        "",
        "| call | p50 | p90 |",
        "|---|---|---|",
        *(f"| {name} | {_ms(v['p50'])} | {_ms(v['p90'])} |" for name, v in reused.items()),
        "",
        f"Signing a decision document ({sig['document_bytes']} bytes), {r['n']} times: in process "
        f"(unencrypted ed25519 key file, `cryptography`) p50 {sig['in_process_ms']['p50']:.2f} ms, p90 "
        f"{sig['in_process_ms']['p90']:.2f} ms; `ssh-keygen -Y sign` with the key in ssh-agent (a `.pub` given) p50 "
        f"{sig['ssh_agent_ms']['p50']:.1f} ms, p90 {sig['ssh_agent_ms']['p90']:.1f} ms. Importing the signing "
        f"modules (`cryptography`) in a fresh CLI: {sig['import_fresh_ms']:.0f} ms (median of 5).",
        "",
        f"The plain release took {r['decisions_on_plain_release']} decisions, {r['counted_on_plain_release']} counted.",
        "",
        "Machine: 2 cores, shared with other sessions' work while this ran (the load average before it is above); "
        "the ratios are of processes interleaved in one run, so both sides saw the same load.",
    ]
    return out


def _same_run_before(r: dict) -> list[str]:
    """A against A0 (the earlier version's code), interleaved in this run."""
    t, ratios = r["timings"], r["ratios"]
    if "A0" not in t:
        return []
    return [
        f"Before and after in this run: A0 (before) p50 {_ms(t['A0']['p50'])}, A (now) {_ms(t['A']['p50'])}, "
        f"A/A0 {ratios['A/A0 p50']:.2f}x; over P, A0/P {ratios['A0/P p50']:.2f}x -> A/P {ratios['A/P p50']:.2f}x, "
        f"A0 - P {_ms(t['A0']['p50'] - t['P']['p50'])} -> A - P {_ms(t['A']['p50'] - t['P']['p50'])}.",
        "",
    ]


def _floor_lines(r: dict) -> list[str]:
    """What each kind of client imports (medians in fresh interpreters), and A's share above the floors."""
    floors = r.get("import_floors")
    if not floors:
        return []
    sdk, pydantic, prodline = floors.values()
    return [
        "What a client imports before it sends a byte (in-process time of the imports, medians of "
        f"{max(9, r['phase_runs'])} fresh interpreters, interleaved):",
        "",
        "| imports | median |",
        "|---|---|",
        *(f"| {name} | {_ms(seconds)} |" for name, seconds in floors.items()),
        "",
        f"Of A's imports over P's ({_ms(prodline - sdk)}), {_ms(pydantic - sdk)} is pydantic and the SDK's "
        "pydantic converter (any client sending pydantic payloads pays it) and "
        f"{_ms(prodline - pydantic)} is prodline's own modules and the models they build.",
        "",
    ]


def _before_lines(r: dict) -> list[str]:
    """This run against the previous one saved (another commit), each with its own run's ratios."""
    before = r.get("previous")
    if not before:
        return []
    now, ratios = r["timings"], r["ratios"]
    return [
        f"Against the previous saved run ({before['date'][:16]}Z, commit {before['commit']}): A p50 "
        f"{_ms(before['A_p50'])} -> {_ms(now['A']['p50'])}, S p50 {_ms(before['S_p50'])} -> {_ms(now['S']['p50'])}; "
        f"ratios within each run: A/P {before['A/P p50']:.2f}x -> {ratios['A/P p50']:.2f}x, A/B "
        f"{before['A/B p50']:.2f}x -> {ratios['A/B p50']:.2f}x, A - P {_ms(before['A_p50'] - before['P_p50'])} -> "
        f"{_ms(now['A']['p50'] - now['P']['p50'])}.",
        "",
    ]


def _previous(results_json: Path) -> dict | None:
    """The last saved run's figures this report compares with (None if there is none)."""
    runs = json.loads(results_json.read_text()).get("approve", []) if results_json.exists() else []
    if not runs:
        return None
    last = runs[-1]
    t = last["timings"]
    return {
        "date": last["date"],
        "commit": last["git"]["commit"],
        "A_p50": t["A"]["p50"],
        "P_p50": t["P"]["p50"],
        "S_p50": t["S"]["p50"],
        "A/P p50": last["ratios"]["A/P p50"],
        "A/B p50": last["ratios"]["A/B p50"],
    }


def save(text: str, result: dict) -> None:
    """Section 7 between its markers in RESULTS.md (before History); the run under ``approve`` in results.json."""
    from report import RESULTS_JSON, RESULTS_MD

    save_section(RESULTS_MD, text, BEGIN, END, TITLE)
    data = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {}
    data["approve"] = [*data.get("approve", []), result][-10:]
    RESULTS_JSON.write_text(json.dumps(data, indent=1, default=str) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20, help="processes of each kind (at most 100)")
    parser.add_argument("--phase-runs", type=int, default=5, help="fresh interpreters for A's breakdown")
    parser.add_argument(
        "--before",
        type=Path,
        metavar="TREE",
        help="also time A0, prodline approve from this source tree (an earlier version), interleaved",
    )
    parser.add_argument("--before-label", default="", help="what --before is, for the report (e.g. 'commit 5a2d130')")
    parser.add_argument("--save", action="store_true", help="write section 7 of bench/RESULTS.md and results.json")
    args = parser.parse_args()
    if not 1 <= args.n <= 100:  # the release takes at most 500 decisions: 4 per round, plus the breakdowns
        parser.error("--n: between 1 and 100")
    from report import RESULTS_JSON, git, machine, machine_line

    load = os.getloadavg()[0]
    began = time.monotonic()
    result = asyncio.run(measure(args.n, args.phase_runs, args.before))
    if args.before is not None:
        result["before"] = args.before_label or str(args.before)
    m = machine()
    result.update(
        date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        seconds=time.monotonic() - began,
        load_before=load,
        phase_runs=args.phase_runs,
        machine=m,
        git=git(),
        previous=_previous(RESULTS_JSON),
    )
    header = (
        f"_Run of {result['date'][:16]}Z (`python bench/approve.py --n {args.n}"
        + (" --before TREE" if args.before is not None else "")
        + f" --save`), commit "
        f"{result['git']['commit']}, {machine_line(m)}; 1-min load average before: {load:.2f}._"
    )
    text = "\n".join(lines(result, header))
    print(text)
    if args.save:
        save(text, result)
        print("wrote bench/RESULTS.md (section 7) and bench/results.json (approve)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
