"""The application file: ordered environments and the rules that gate them.

.. code-block:: yaml

    application: shop
    environments:
      - name: staging
      - name: production
        preconditions: [...]
        checks: [...]
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from prodline.errors import InvalidInput

from .base import BundleSpec, Model, Name, unique_names
from .freezes import ScheduledFreeze
from .rules import Check, Precondition, Protection
from .safety import DriftPolicy, RollbackPolicy

# People are named as in approval rules: a login, an email's local part, "alice.smith".
PersonName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}$")]


def _usable_key(line: str) -> str:
    # Imported here: the key parser pulls in `cryptography`, which `prodline --help` must not pay for.
    from prodline.identity.verify import key_problem

    problem = key_problem(line)
    if problem:
        raise ValueError(f"{problem} (paste the line of a .pub file, e.g. ~/.ssh/id_ed25519.pub)")
    return line.strip()


def _keyring_problem(people: dict[str, list[str]]) -> str:
    """Why these people's keys cannot make one keyring ("" if they can): a key listed for two
    people, compared decoded, as the verifier compares them (two texts can encode one key)."""
    from prodline.identity.verify import Keyring  # lazily, as in _usable_key

    try:
        Keyring.of(people)
    except InvalidInput as exc:
        return str(exc)
    return ""


PublicKeyLine = Annotated[str, AfterValidator(_usable_key)]
# One key may be written on its own, without a list.
PublicKeys = Annotated[list[PublicKeyLine], BeforeValidator(lambda v: [v] if isinstance(v, str) else v)]


class Environment(Model):
    """One environment (release channel), deployed in file order."""

    name: Name
    env: dict[str, str] = Field(
        default_factory=dict, description="Environment variables for every step and rule run in this environment."
    )
    task_queue: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$",
        description="Task queue this environment's steps and rules run on: workers inside its network, with its "
        "credentials (`prodline worker --task-queue Q`). Unset: the control queue, with the release workflow.",
    )
    verify: Literal["none", "ssh"] = Field(
        default="none",
        description="How decisions here prove who made them. `ssh`: signed with a key listed under `people` "
        "(`prodline approve --key`), checked by the engine. `none`: the name given (`--as`) is taken as it is, "
        "for environments such as dev.",
    )
    preconditions: list[Precondition] = Field(default_factory=list, description="One-shot gates before deploying.")
    checks: list[Check] = Field(default_factory=list, description="Checks before and after deploying.")
    rollback: RollbackPolicy = Field(
        default_factory=RollbackPolicy, description="Automatic rollback, and what a manual rollback may skip."
    )
    drift: DriftPolicy = Field(default_factory=DriftPolicy, description="Looking for (and healing) drift.")
    freezes: list[ScheduledFreeze] = Field(
        default_factory=list,
        description="Scheduled freezes: one-off ranges or RFC 5545 recurring windows, in a time zone. Releases "
        "reaching the environment wait while one holds, as they do during `prodline freeze`.",
    )


class Application(Model):
    """Top level of the application file."""

    application: Name = Field(description="Application name; services refer to it.")
    description: str = ""
    environments: list[Environment] = Field(min_length=1, description="Environments in promotion order.")
    services: list[Name] | None = Field(
        default=None,
        description="The services that may be released under these rules; unset: any service naming this "
        "application. Set it where services of other teams could claim it (shared workers or credentials).",
    )
    bundle: BundleSpec = Field(
        default_factory=BundleSpec, description="The files this application's rules run, registered with it."
    )
    protections: dict[Name, Protection] = Field(
        default_factory=dict, description="Reusable checks, referenced from environments with `use:`."
    )
    people: dict[PersonName, PublicKeys] = Field(
        default_factory=dict,
        description="The people who decide, each with the SSH public keys they sign with (OpenSSH lines, "
        "ssh-ed25519 or ssh-rsa). Approval rules name them; `verify: ssh` environments accept only their "
        "signatures.",
    )
    signed_starts: bool = Field(
        default=False,
        description="A release starts only when one of `people` signs the start (`release start --key`); "
        "that person is its initiator, so `forbid_initiator` compares verified people.",
    )

    @field_validator("environments")
    @classmethod
    def _unique_environments(cls, environments: list[Environment]) -> list[Environment]:
        return unique_names(environments, "environment")

    @model_validator(mode="after")
    def _signed_rules_name_enrolled_people(self) -> Application:
        """Where decisions are signed, every person a rule names needs a key, and a banned
        initiator must be a verified one (else a forged `--initiator` gets around the ban)."""
        errors: list[InitErrorDetails] = []

        def refuse(loc: tuple[str | int, ...], message: str) -> None:
            errors.append(
                InitErrorDetails(
                    type=PydanticCustomError("signed_decisions", "{message}", {"message": message}), loc=loc, input=None
                )
            )

        problem = _keyring_problem(self.people)
        if problem:
            refuse(("people",), problem)
        if self.signed_starts and not self.people:
            refuse(("signed_starts",), "signed starts need people with keys: list them under `people:`")
        for i, env in enumerate(self.environments):
            if env.verify != "ssh":
                continue
            if not self.people:
                refuse(("environments", i, "verify"), "verify: ssh needs people with keys: list them under `people:`")
            for j, rule in enumerate(env.preconditions):
                approval = rule.approval
                if approval is None:
                    continue
                loc = ("environments", i, "preconditions", j, "approval")
                for name in approval.approvers:
                    if name not in self.people:
                        refuse(
                            (*loc, "approvers"),
                            f"{name} is not listed under `people`; {env.name} takes signed decisions only, "
                            "so every approver needs a key there",
                        )
                if approval.forbid_initiator and not self.signed_starts:
                    refuse(
                        (*loc, "forbid_initiator"),
                        f"{env.name} takes signed decisions only, so the initiator it bans must be verified too: "
                        "set `signed_starts: true` (releases then start with `prodline release start --key`)",
                    )
        if errors:
            raise ValidationError.from_exception_data("Application", errors)
        return self

    def environment(self, name: str) -> Environment | None:
        return next((e for e in self.environments if e.name == name), None)

    @property
    def environment_names(self) -> list[str]:
        return [e.name for e in self.environments]
