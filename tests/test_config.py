"""Config files: valid ones load, bad ones give located errors with a fix, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from prodline.config import ConfigError, load_plan, load_project, validate_files
from prodline.config.durations import format_duration, parse_duration

from conftest import REPO, Cli

EXAMPLE_APP = REPO / "examples/shop/prodline.yaml"
EXAMPLE_SERVICE = REPO / "examples/shop/checkout/prodline.service.yaml"

APP = """\
application: shop
protections:
  smoke:
    command: {run: "./smoke.sh {{ args.url }}"}
    args: {url: null, retries: 3}
environments:
  - name: staging
  - name: production
    checks:
      - use: smoke
        with: {url: "https://example.test"}
"""

SERVICE = """\
service: checkout
application: shop
parameters:
  replicas: {type: int, default: 1}
  image: {type: image}
  db_password: {type: secret, from_env: DB_PASSWORD}
steps:
  - name: deploy
    command: {apply: "./deploy.sh {{ params.image }} {{ version }}"}
environments:
  production:
    parameters: {replicas: 3}
    steps:
      deploy: {timeout: 2h, command: {env: {REGION: eu}}}
"""


def prodline(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """The CLI as conftest's Cli runs it, from ``cwd`` and with no Temporal needed (so nothing to register)."""
    runner = Cli(dict(os.environ))
    runner.auto_apply = False
    return runner.run(*args, cwd=cwd, timeout=60)


def write(tmp_path: Path, app: str = APP, service: str = SERVICE) -> Path:
    (tmp_path / "prodline.yaml").write_text(textwrap.dedent(app))
    (tmp_path / "svc").mkdir(exist_ok=True)
    service_file = tmp_path / "svc" / "prodline.service.yaml"
    service_file.write_text(textwrap.dedent(service))
    return service_file


def problems(tmp_path: Path, app: str = APP, service: str = SERVICE) -> list[str]:
    service_file = write(tmp_path, app, service)
    return [str(p) for p in validate_files([tmp_path / "prodline.yaml", service_file])]


def test_the_example_validates():
    result = prodline("validate", str(EXAMPLE_APP), str(EXAMPLE_SERVICE))
    assert result.returncode == 0, result.stdout
    assert "2 file(s) valid" in result.stdout


def test_overrides_and_protections_resolve_per_environment(tmp_path):
    project = load_project(write(tmp_path))
    staging, production = project.environments
    assert staging.steps[0].timeout == timedelta(minutes=30)
    assert production.steps[0].timeout == timedelta(hours=2)
    # Nested maps merge: the override adds env without dropping `apply`.
    assert production.steps[0].command.env == {"REGION": "eu"}
    assert production.steps[0].command.apply.startswith("./deploy.sh")
    check = production.checks[0]
    assert check.kind == "command" and check.label == "smoke"
    assert check.args == {"url": "https://example.test", "retries": 3}
    request = load_plan(write(tmp_path), {"image": "ghcr.io/acme/checkout:1.2.3"}, "alice")
    assert [e.parameters["replicas"] for e in request.environments] == ["1", "3"]
    assert request.secrets == {"db_password": "DB_PASSWORD"}
    assert "s3cret" not in request.model_dump_json()


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        (
            SERVICE.replace("steps:\n  - name", "stpes:\n  - name"),
            "svc/prodline.service.yaml:7: stpes: unknown key 'stpes' (hint: did you mean 'steps'?)",
        ),
        (
            SERVICE.replace("name: deploy", "name: Deploy_1"),
            "svc/prodline.service.yaml:8: steps[0].name: 'Deploy_1' is not a valid name",
        ),
        (
            SERVICE.replace("{type: int, default: 1}", "{type: int, default: lots}"),
            "svc/prodline.service.yaml:4: parameters.replicas: expected an integer, got 'lots'",
        ),
        (
            SERVICE.replace("command: {apply", "shell: {apply"),
            "svc/prodline.service.yaml:9: steps[0].shell: unknown key 'shell'",
        ),
        (
            SERVICE.replace("deploy: {timeout: 2h", "deploy: {timeout: 2 hours"),
            "svc/prodline.service.yaml:14: environments.production.steps.deploy.timeout: '2 hours' is not a duration",
        ),
        (
            SERVICE.replace("  production:\n", "  prod:\n"),
            "svc/prodline.service.yaml:11: environments.prod: no environment 'prod' in application 'shop' (hint: environments are: staging, production)",
        ),
        (
            SERVICE.replace("deploy: {timeout", "deplyo: {timeout"),
            "svc/prodline.service.yaml:14: environments.production.steps.deplyo: no step named 'deplyo'",
        ),
        (
            SERVICE.replace("{{ version }}", "{{ verison }}"),
            "svc/prodline.service.yaml:8: steps[0]: unknown template name {{ verison }}",
        ),
        (
            SERVICE.replace("{{ version }}", "{{ params.db_password }}"),
            "hint: secrets reach commands only as the environment variable PRODLINE_PARAM_DB_PASSWORD",
        ),
        (
            SERVICE.replace("application: shop", "application: shoppe"),
            "svc/prodline.service.yaml:2: application: application 'shoppe' does not match 'shop'",
        ),
        (
            SERVICE.replace("  replicas:", "  image: {type: string}\n  replicas:"),
            "svc/prodline.service.yaml:6: parameters.image: duplicate key 'image'",
        ),
        (
            SERVICE.replace("    command: {apply", "    command: {apply: x}\n    xcommand: {apply"),
            "svc/prodline.service.yaml:10: steps[0].xcommand: unknown key 'xcommand' (hint: did you mean 'command'?)",
        ),
        (
            SERVICE.replace("steps:\n  - name: deploy\n    command:", "steps:\n  - name: deploy\n    comand:"),
            "svc/prodline.service.yaml:9: steps[0].comand: unknown key 'comand' (hint: did you mean 'command'?)",
        ),
        (
            SERVICE.replace("{type: secret, from_env: DB_PASSWORD}", "{type: secret}"),
            "a secret parameter needs `from_env: VARIABLE`",
        ),
        (
            SERVICE.replace("  - name: deploy\n", "  - name: deploy\n    timeout: 5m\n    retry: {attempts: 0}\n"),
            "svc/prodline.service.yaml:10: steps[0].retry.attempts: Input should be greater than or equal to 1",
        ),
        ("service: [unclosed\n", "svc/prodline.service.yaml:2: invalid YAML"),
        (
            SERVICE.replace("environments:\n", "  - name: deploy\n    command: {apply: 'true'}\nenvironments:\n"),
            "svc/prodline.service.yaml:10: steps[1].name: step 'deploy' is listed twice",
        ),
    ],
)
def test_service_errors_are_located(tmp_path, service, expected):
    found = problems(tmp_path, service=service)
    assert any(expected in p for p in found), found


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        (
            APP.replace("use: smoke", "use: smoek"),
            "prodline.yaml:10: environments[1].checks[0].use: no protection named 'smoek' (hint: did you mean 'smoke'?)",
        ),
        (
            APP.replace('with: {url: "https://example.test"}', "with: {retries: 1}"),
            "protection 'smoke' needs argument 'url'",
        ),
        (
            APP.replace('with: {url: "https://example.test"}', "with: {url: x, colour: red}"),
            "environments[1].checks[0].with.colour: protection 'smoke' takes no argument 'colour'",
        ),
        (
            APP.replace("- name: production", "- name: staging"),
            "prodline.yaml:8: environments[1].name: environment 'staging' is listed twice",
        ),
        (
            APP.replace("{{ args.url }}", "{{ args.uri }}"),
            "prodline.yaml:3: protections.smoke: unknown template name {{ args.uri }}",
        ),
        (
            APP.replace("environments:", "enviroments:"),
            "enviroments: unknown key 'enviroments' (hint: did you mean 'environments'?)",
        ),
        (
            APP + "        when: [after_deploy]\n        for: soon\n",
            "environments[1].checks[0].for: 'soon' is not a duration",
        ),
        ("- just a list\n", "prodline.yaml:1: not a prodline file"),
        (
            APP + "    preconditions:\n      - window: {days: [mon], timezone: Mars/Olympus}\n",
            "prodline.yaml:13: environments[1].preconditions[0].window.timezone: unknown time zone 'Mars/Olympus'",
        ),
        (APP + "    preconditions:\n      - window: {hours: '16:00-09:00'}\n", "the window must end after it starts"),
        (
            APP + "    preconditions:\n      - window: {hours: '00:00-24:30'}\n",
            "window.hours: '00:00-24:30' is not in the expected format (hint: HH:MM-HH:MM, local time; 24:00 for the end of the day.)",
        ),
        (
            APP.replace('with: {url: "https://example.test"}', "with: {url: x}\n        interval: 0s"),
            "environments[1].checks[0].interval: must be longer than 0s",
        ),
        (
            APP + "    preconditions:\n      - stable: {environment: production}\n",
            "environments[1].preconditions[0].stable.environment: 'production' is not an environment before 'production' (hint: earlier environments: staging)",
        ),
        (
            APP + "    preconditions:\n      - approval: {approvers: [alice], min_approvers: 2}\n",
            "min_approvers is 2 but only 1 approvers are listed",
        ),
        (
            APP + "    preconditions:\n      - aproval: {approvers: [alice]}\n",
            "environments[1].preconditions[0].aproval: unknown key 'aproval' (hint: did you mean 'approval'?)",
        ),
        (
            APP.replace("      - use: smoke\n        with:", "      - approval: {}\n        with:"),
            "environments[1].checks[0].approval: unknown key 'approval'",
        ),
        (
            APP + "      - prometheus: {url: 'http://p:9090', query: up, condition: 'below 1'}\n",
            "environments[1].checks[1].prometheus.condition: 'below 1' is not in the expected format (hint: Comparison each sample must meet, e.g. '< 0.01'.)",
        ),
        (
            APP + "      - alerts: {url: 'http://am:9093', matchers: ['service~checkout']}\n",
            'is not a matcher like service="checkout"',
        ),
        (
            APP + "      - http: {url: 'localhost:8080'}\n",
            "environments[1].checks[1].http.url: 'localhost:8080' is not in the expected format (hint: http(s) URL",
        ),
    ],
)
def test_application_errors_are_located(tmp_path, app, expected):
    found = problems(tmp_path, app=app)
    assert any(expected in p for p in found), found


@pytest.mark.parametrize(
    "url", ["https://{{ service }}.internal/healthz", "http://prom-{{environment}}:9090/", "{{ environment }}"]
)
def test_rule_urls_may_hold_templates_spaced_or_not(tmp_path, url):
    assert problems(tmp_path, app=APP + f"      - http: {{url: '{url}'}}\n") == []


def test_validate_reports_each_problem_once_however_the_file_is_named(tmp_path):
    write(tmp_path, app=APP.replace("use: smoke", "use: nosuch"))
    result = prodline("validate", ".", cwd=tmp_path)  # the app is read as given and again via the service
    assert result.returncode == 2
    assert result.stdout.count("no protection named 'nosuch'") == 1, result.stdout
    assert "1 problem(s) in 1 file(s)" in result.stdout


def test_validate_cli_exits_2_with_every_problem_and_no_traceback(tmp_path):
    service_file = write(tmp_path, service=SERVICE.replace("steps:", "stpes:").replace("type: int", "type: integer"))
    result = prodline("validate", str(tmp_path / "prodline.yaml"), str(service_file))
    assert result.returncode == 2
    lines = result.stdout.splitlines()
    assert any(line.startswith(f"{service_file}:4: parameters.replicas.type:") for line in lines), lines
    assert any(f"{service_file}:7: stpes: unknown key" in line for line in lines), lines
    assert "Traceback" not in result.stdout + result.stderr
    as_json = json.loads(prodline("validate", "--json", str(service_file)).stdout)
    assert as_json["valid"] is False
    assert {p["field"] for p in as_json["problems"]} >= {"stpes", "parameters.replicas.type"}


def test_service_without_a_findable_application_says_how_to_fix(tmp_path):
    service_file = tmp_path / "alone.yaml"
    service_file.write_text(SERVICE)
    with pytest.raises(ConfigError) as caught:
        load_project(service_file)
    assert "cannot find the application file for 'shop'" in str(caught.value)
    assert "name the application file too" in str(caught.value)


def test_release_start_rejects_bad_parameters_before_contacting_temporal(tmp_path):
    service_file = write(tmp_path)
    result = prodline(
        "release", "start", str(service_file), "--version", "1.0.0", "--param", "replicas=many", "--param", "colour=red"
    )
    assert result.returncode == 2, result.stderr
    assert "parameters.colour: unknown parameter 'colour'" in result.stderr
    assert "parameters.replicas: expected an integer" in result.stderr
    assert "parameter 'image' has no value for staging" in result.stderr
    bad_version = prodline(
        "release", "start", str(service_file), "--version", "1.0; rm -rf /", "--param", "image=nginx"
    )
    assert bad_version.returncode == 2 and "is not a valid version" in bad_version.stderr


def test_schema_describes_both_files():
    result = prodline("schema")
    assert result.returncode == 0
    schemas = json.loads(result.stdout)
    assert {"environments", "protections", "application"} <= set(schemas["application"]["properties"])
    assert {"steps", "parameters", "environments", "service"} <= set(schemas["service"]["properties"])
    assert schemas["service"]["additionalProperties"] is False


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("10m", 600), ("1h30m", 5400), ("2d", 172800), ("250ms", 0.25)]
)
def test_durations_parse_and_print_back(text, seconds):
    value = parse_duration(text)
    assert value.total_seconds() == seconds
    assert parse_duration(format_duration(value)) == value


def test_a_duration_without_a_unit_is_refused_not_guessed(tmp_path):
    app = APP.replace(
        "  - name: production\n",
        "  - name: production\n    preconditions:\n      - stable: {environment: staging, soak: 30}\n",
    )
    found = problems(tmp_path, app=app)
    assert any("soak: 30 has no unit; write 30s for seconds or 30m for minutes" in p for p in found), found


def test_help_lists_every_command_and_loads_no_engine():
    """`prodline --help` answers at once: it loads neither Temporal, pydantic nor any tool client."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "prodline.cli", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    for command in ("validate", "schema", "setup", "dev", "worker", "release", "approve", "reject"):
        assert command in result.stdout
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    heavy = sorted(m for m in imported if m.split(".")[0] in {"temporalio", "pydantic", "httpx", "python_terraform"})
    assert not heavy, f"--help imported {heavy}"


def test_the_seed_example_validates_fits_in_42_lines_and_is_the_one_in_the_readme():
    app = REPO / "examples/seed/prodline.yaml"
    service = REPO / "examples/seed/checkout/prodline.service.yaml"
    assert validate_files([app, service]) == []
    texts = [app.read_text(), service.read_text()]
    assert sum(len(t.splitlines()) for t in texts) <= 42
    readme = (REPO / "README.md").read_text()
    for text in texts:
        assert text.rstrip() in readme
    project = load_project(service)
    production = project.environments[1]
    assert [p.kind for p in production.preconditions] == ["stable", "approval"]  # as written
    # Production takes signed decisions only, from the two people enrolled with their keys.
    assert production.environment.verify == "ssh" and project.application.signed_starts
    assert sorted(project.application.people) == ["alice", "bob"]
    assert production.checks[0].kind == "alerts" and production.checks[0].watch_for == timedelta(minutes=5)
    # The service deploys its existing manifest with the kubernetes step, the release's image set in it.
    assert [s.kind for s in project.service.steps] == ["kubernetes"]
    assert project.service.steps[0].kubernetes.images == {"checkout": "{{ params.image }}"}


def test_a_config_error_is_invalid_input_with_exit_code_2(tmp_path):
    from prodline.errors import INVALID, InvalidInput

    with pytest.raises(InvalidInput) as caught:
        load_project(write(tmp_path, service=SERVICE.replace("steps:", "stpes:")))
    assert isinstance(caught.value, ConfigError) and caught.value.exit_code == INVALID
    assert {"stpes", "steps"} <= {p.field for p in caught.value.problems}
    assert str(caught.value) == "\n".join(str(p) for p in caught.value.problems)


def _steps(tmp_path: Path, steps: str) -> list:
    service = SERVICE.replace(
        '  - name: deploy\n    command: {apply: "./deploy.sh {{ params.image }} {{ version }}"}\n', steps
    )
    return load_project(write(tmp_path, service=service)).environments[0].steps


def test_each_step_kind_declares_what_the_workflow_reads(tmp_path):
    steps = _steps(
        tmp_path,
        "  - name: infra\n    terraform: {dir: infra}\n"
        "  - name: locked\n    terraform: {dir: infra, on_stale_plan: fail}\n"
        "  - name: stack\n    pulumi: {stack: prod}\n"
        "  - name: script\n    command: {apply: ./deploy.sh}\n"
        "  - name: deploy\n    command:\n      apply: ./deploy.sh\n      plan: ./deploy.sh --dry-run\n"
        "      env: {DB: '{{ steps.infra.outputs.url }}'}\n",
    )
    declared = {s.name: (s.spec.has_plan, s.spec.stale_plan_policy, s.spec.reads_step_outputs) for s in steps}
    assert declared == {
        "infra": (True, "replan", False),
        "locked": (True, "fail", False),
        "stack": (True, "replan", False),
        "script": (False, "fail", False),
        "deploy": (True, "fail", True),
    }


def test_each_rule_kind_declares_its_evaluation_budget_and_recheck(tmp_path):
    app = APP + (
        "      - http: {url: 'https://x.test', attempts: 3, timeout: 10s, retry_interval: 2s}\n"
        "      - command: {run: ./check.sh, timeout: 2m}\n"
        "      - prometheus: {url: 'http://p:9090', query: up, condition: '> 0', timeout: 20s}\n"
        "      - alerts: {url: 'http://am:9093', matchers: {service: checkout}}\n"
        "    preconditions:\n"
        "      - window: {hours: '09:00-17:00'}\n"
        "      - stable: {environment: staging}\n"
        "      - approval: {timeout: 1h}\n"
    )
    production = load_project(write(tmp_path, app=app)).environments[1]
    rules = [*production.checks[1:], *production.preconditions]
    declared = {r.kind: (r.spec.evaluation_budget, r.spec.recheck_before_deploy) for r in rules}
    assert declared == {
        "http": (timedelta(seconds=10), False),  # one request per evaluation
        "command": (timedelta(minutes=2), False),
        "prometheus": (timedelta(seconds=20), False),
        "alerts": (timedelta(seconds=10), False),
        "window": (timedelta(minutes=5), True),  # approvals can take long: re-checked before deploying
        "stable": (timedelta(minutes=5), False),
        "approval": (timedelta(minutes=5), False),  # decided by people; its timeout is theirs
    }


def test_the_kind_registries_are_derived_from_the_models():
    from pydantic import ValidationError

    from prodline.config.rules import CHECK_KINDS, PRECONDITION_KINDS, Check, RuleSpec, rule_kinds
    from prodline.config.steps import STEP_KINDS, Step, StepSpec, step_kinds

    assert STEP_KINDS == tuple(step_kinds()) == ("command", "terraform", "pulumi", "kubernetes", "rollout")
    assert PRECONDITION_KINDS == tuple(rule_kinds()) == (*CHECK_KINDS, "freeze", "approval", "stable")
    assert all(issubclass(k, StepSpec) for k in step_kinds().values())
    assert all(issubclass(k, RuleSpec) for k in rule_kinds().values())

    # A new kind is one model and one field: the registry and the "exactly one" rule follow.
    class KubeStep(StepSpec):
        manifest: str

        @property
        def has_plan(self) -> bool:
            return True

    class KubeRule(RuleSpec):
        deployment: str

        @property
        def evaluation_budget(self) -> timedelta:
            return timedelta(seconds=1)

    class WithKube(Step):
        kube: KubeStep | None = None

    class CheckWithKube(Check):
        kube: KubeRule | None = None

    assert WithKube.kinds == (*STEP_KINDS, "kube")
    assert CheckWithKube.kinds == (*CHECK_KINDS, "kube")
    assert WithKube.model_validate({"name": "a", "kube": {"manifest": "m.yaml"}}).spec.has_plan
    with pytest.raises(ValidationError, match="exactly one of: command, terraform, pulumi, kube"):
        WithKube.model_validate({"name": "a"})


def test_parameter_values_are_checked_alike_from_the_command_line_and_the_file(tmp_path):
    def start(service: str, values: dict[str, str]) -> str:
        with pytest.raises(ConfigError) as caught:
            load_plan(write(tmp_path, service=service), {"image": "nginx", **values}, "alice")
        return str(caught.value)

    service_file = "svc/prodline.service.yaml"
    assert start(SERVICE, {"db_password": "s3cret"}).endswith(
        f"{service_file}: parameters.db_password: a secret's value cannot be given on the command line"
        " (hint: set DB_PASSWORD on the worker)"
    )
    in_file = start(SERVICE.replace("{replicas: 3}", "{replicas: 3, db_password: s3cret, colour: red}"), {})
    assert (
        f"{service_file}:12: environments.production.parameters.db_password: a secret's value cannot be given"
        " in the file (hint: set DB_PASSWORD on the worker)"
    ) in in_file
    assert "environments.production.parameters.colour: unknown parameter 'colour' (hint: declared: " in in_file
    assert start(SERVICE, {"replicas": "many"}).endswith("parameters.replicas: expected an integer, got 'many'")


APPROVAL_APP = (
    APP + "    preconditions:\n      - approval: {approvers: [alice, bob], min_approvers: 2, forbid_initiator: true}\n"
)


def test_an_approval_the_initiator_could_never_pass_is_refused_at_start(tmp_path):
    service_file = write(tmp_path, app=APPROVAL_APP)
    with pytest.raises(ConfigError) as caught:
        load_plan(service_file, {"image": "nginx"}, "alice")
    assert str(caught.value) == (
        f"{tmp_path / 'prodline.yaml'}:13: environments[1].preconditions[0].approval: production: precondition"
        " approval: alice started this release and may not approve it; 1 approver left, 2 needed"
        " (hint: start it as someone else (--initiator), list more approvers or lower min_approvers)"
    )


def test_release_start_refuses_an_approval_the_initiator_could_never_pass_by_the_registered_rules(
    cli, worker, tmp_path
):
    name = f"shop-{uuid.uuid4().hex[:6]}"  # the session's registry is shared: an application of its own
    own = lambda text: text.replace("application: shop\n", f"application: {name}\n")  # noqa: E731
    service_file = write(tmp_path, app=own(APPROVAL_APP), service=own(SERVICE))
    cli.auto_apply = False  # registered once, below: the local edit later must not be applied
    cli.apply(tmp_path / "prodline.yaml")
    result = cli.run(
        "release", "start", str(service_file), "--version", "1.0.0", "--param", "image=nginx", "--initiator", "bob"
    )
    assert result.returncode == 2
    assert "production: precondition approval: bob started this release and may not approve it" in result.stderr
    assert f"{name} revision 1" in result.stderr  # located in the registered revision, not the local file

    # A local copy without the rule changes nothing: the registered one still refuses.
    (tmp_path / "prodline.yaml").write_text(own(APP))
    again = cli.run(
        "release", "start", str(service_file), "--version", "1.0.0", "--param", "image=nginx", "--initiator", "bob"
    )
    assert again.returncode == 2 and "bob started this release and may not approve it" in again.stderr


@pytest.mark.parametrize(
    ("approval", "initiator"),
    [
        ("{approvers: [alice, bob], min_approvers: 2, forbid_initiator: true}", "carol"),  # not on the list
        ("{approvers: [alice, bob, carol], min_approvers: 2, forbid_initiator: true}", "alice"),  # two are left
        ("{approvers: [alice, bob], min_approvers: 2}", "alice"),  # may approve her own release
        ("{approvers: [], min_approvers: 3, forbid_initiator: true}", "alice"),  # anyone: never impossible
    ],
)
def test_an_approval_others_can_pass_starts(tmp_path, approval, initiator):
    app = APP + f"    preconditions:\n      - approval: {approval}\n"
    request = load_plan(write(tmp_path, app=app), {"image": "nginx"}, initiator)
    assert [p.kind for p in request.environments[1].preconditions] == ["freeze", "approval"]


def test_the_http_rules_deprecated_attempts_count_as_failures_allowed(tmp_path):
    """`attempts: N` used to retry inside one evaluation; the engine's one retry layer is failures_allowed."""
    app = APP.replace(
        "    args: {url: null, retries: 3}\n",
        "    args: {url: null, retries: 3}\n  health:\n    http: {url: 'https://x.test', attempts: 4}\n",
    ) + (
        "      - http: {url: 'https://x.test', attempts: 3}\n"
        "      - http: {url: 'https://x.test', attempts: 3}\n"
        "        failures_allowed: 0\n"
        "      - http: {url: 'https://x.test'}\n"
        "      - use: health\n"
    )
    checks = load_project(write(tmp_path, app=app)).environments[1].checks[1:]
    assert [c.failures_allowed for c in checks] == [2, 0, 2, 3]  # unset, attempts was 3: two blips tolerated


def test_an_application_that_lists_its_services_refuses_any_other(tmp_path):
    """A service file names its application; where the application lists its services, a
    service of another team cannot claim its environments (and their workers)."""
    app = APP.replace("application: shop\n", "application: shop\nservices: [cart]\n", 1)
    service_file = write(tmp_path, app=app)
    with pytest.raises(ConfigError) as caught:
        load_project(service_file)
    (problem,) = caught.value.problems
    assert problem.file == str(service_file) and problem.loc == ("service",)
    assert "application 'shop' does not list service 'checkout'" in str(problem)
    assert "it lists: cart" in str(problem)
    listed = write(
        tmp_path, app=APP.replace("application: shop\n", "application: shop\nservices: [cart, checkout]\n", 1)
    )
    assert load_project(listed).service.service == "checkout"


def test_manifests_keep_other_tools_templates_but_not_typos_of_ours():
    from prodline.config.templates import TemplateError, render

    # Argo Rollouts' own `{{args.NAME}}` in an AnalysisTemplate is left for Argo; ours render.
    text = "{{ version }} {{args.service-name}} {{ params.image }}"
    assert render(text, {"version": "1.2.0", "params.image": "app:1"}, foreign_ok=True) == (
        "1.2.0 {{args.service-name}} app:1"
    )
    with pytest.raises(TemplateError, match="did you mean params"):
        render("{{ param.image }}", {}, foreign_ok=True)
    with pytest.raises(TemplateError, match="unknown template name"):
        render("{{ params.imag }}", {"params.image": "x"}, foreign_ok=True)
    with pytest.raises(TemplateError):  # elsewhere (steps, rules) every name must be ours
        render("{{args.service-name}}", {})


def test_the_rollouts_example_validates_and_its_pauses_match_its_canary():
    from prodline.activities.kube.manifests import load_manifests

    folder = REPO / "examples/rollouts"
    service_file = folder / "storefront/prodline.service.yaml"
    assert validate_files([folder / "prodline.yaml", service_file]) == []
    project = load_project(service_file)
    base, web = project.service.steps
    assert (base.kind, web.kind) == ("kubernetes", "rollout") and base.kubernetes.prune
    # The service file sits next to the manifests it deploys, and they load as kubectl reads them.
    objects = [m.obj for m in load_manifests(web.rollout.manifests, service_file.parent)]
    (rollout,) = [o for o in objects if o["kind"] == "Rollout"]
    indefinite = [s for s in rollout["spec"]["strategy"]["canary"]["steps"] if s.get("pause") == {}]
    assert len(indefinite) == len(web.rollout.pauses) == 2
    kinds = [m.obj["kind"] for m in load_manifests(base.kubernetes.manifests, service_file.parent)]
    assert kinds == ["Namespace", "ConfigMap", "Service", "Deployment"]
    # Production runs 6 replicas of the canary; staging keeps the manifest's 3.
    staging, production = project.environments
    assert production.steps[1].rollout.replicas == 6 and staging.steps[1].rollout.replicas is None


def test_a_service_cannot_point_an_environment_at_another_cluster_than_the_application_names(tmp_path):
    app = (
        "application: shop\nenvironments:\n"
        "  - name: staging\n    env: {KUBECONFIG: /etc/kube/staging}\n"
        "  - name: production\n    env: {KUBECONFIG: /etc/kube/production}\n"
    )
    service = (
        "service: checkout\napplication: shop\nsteps:\n  - name: web\n    kubernetes: {manifests: [k8s]}\n"
        "environments:\n  staging:\n    steps:\n      web: {kubernetes: {kubeconfig: /etc/kube/production}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_project(write(tmp_path, app=app, service=service))
    (problem,) = caught.value.problems
    assert problem.field == "environments.staging.steps.web.kubernetes.kubeconfig"
    assert "staging's cluster is set by the application (env.KUBECONFIG)" in problem.message
    # Without the application naming one, the step's own kubeconfig stands (the platform did not say).
    plain = app.replace("    env: {KUBECONFIG: /etc/kube/staging}\n", "")
    assert load_project(write(tmp_path, app=plain, service=service)).environments[0].steps[0].kubernetes.kubeconfig
