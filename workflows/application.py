"""A registered application: one long-lived workflow per application holds its revisions.

``prodline app apply`` sends the application file's text as an update. The
workflow validates it itself (the update validator: a refused change leaves no
trace in history and records nothing), computes its digest itself (a client
cannot claim another), and appends a revision, or answers that the same config
is current already. Releases read the current revision from here, so the
platform team's rules are what Temporal holds, not what a releaser's checkout says.

Trust: revisions come only from this workflow's own updates, and from its own
continue-as-new. A run that someone started by hand with revisions in its input
(or a cron or retry run repeating such an input) starts empty.

Manual freezes (``prodline freeze|unfreeze``) are kept here too, by the ``freeze`` and
``unfreeze`` updates, and read by the freeze rule with the ``freezes`` query. They follow
the same trust rule as revisions: carried by continue-as-new only. Their validators refuse
a freeze without a reason, for an environment the current revision does not have, or for
an application with no revision; a refused order leaves no trace in history.

Versioning: the digest and the change lines are recomputed on replay, from the
code of the worker replaying. A change to how either is computed (the models'
canonical JSON included) needs ``workflow.patched``.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import NoReturn

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    # Validating `people` parses their keys (config imports the parser lazily, to keep the
    # CLI light): inside the sandbox it must be the passed-through module, not a re-import
    # of `cryptography`'s native code, which fails there.
    import prodline.identity.verify  # noqa: F401
    from prodline.config.application import Application
    from prodline.config.changes import bundle_changes, summarise
    from prodline.config.errors import ConfigError
    from prodline.config.freezes import (
        FREEZE_REFUSED,
        FREEZE_UPDATE,
        FREEZES_QUERY,
        NOT_FROZEN,
        UNFREEZE_UPDATE,
        FreezeOrder,
        ManualFreeze,
        UnfreezeOrder,
    )
    from prodline.config.loader import load_application_text
    from prodline.config.release import BundleRef, revision_digest
    from prodline.contracts import (
        ADMIT_APPLY,
        APPLICATION_WORKFLOW,
        APPLY_REFUSED,
        APPLY_UPDATE,
        REVISION_MEMO,
        REVISION_QUERY,
        REVISIONS_QUERY,
        ApplicationChange,
        Applied,
        ApplyAdmission,
        Revision,
        application_id,
    )
    from prodline.identity.documents import FreezeDocument

    from .verification import Identity, Refused, identify_freezer

# An application file is a few kilobytes; this keeps one revision far from Temporal's
# 2 MB payload limit.
MAX_SOURCE_BYTES = 256 * 1024
# Sources carried into the next run, newest first: older revisions keep their metadata,
# and their sources stay in the history of the run that registered them.
CARRIED_SOURCE_BYTES = 1024 * 1024

# The error type of a refused change.
INVALID_APPLICATION = "InvalidApplication"

# Applies are admitted by the workers' admin keys (activities/admins.py); older histories were not.
# One patch per revision: the SDK memoizes `patched` for the whole run, so a single ID that
# replayed False for an old apply would answer False for every live apply after it too.
SIGNED_APPLIES = "signed-applies"
# Freezes and unfreezes are signed where `verify: ssh` says so; older histories took any name.
# One patch per order, for the same reason as above.
SIGNED_FREEZES = "signed-freezes"


class ApplicationRun(BaseModel):
    """Input of one run of the application workflow."""

    revisions: list[Revision] = Field(
        default_factory=list, description="Carried by continue-as-new; ignored on any other start."
    )
    updates_per_run: int = Field(
        default=0, ge=0, description="Continue as new after this many applies (0: when Temporal suggests it)."
    )
    freezes: list[ManualFreeze] = Field(
        default_factory=list, description="Manual freezes, carried by continue-as-new; ignored on any other start."
    )
    signed_orders: dict[str, datetime] = Field(
        default_factory=dict,
        description="Signed freezes and unfreezes taken (use digest -> the signature's expiry), carried by "
        "continue-as-new while valid; ignored on any other start.",
    )


def application_of(workflow_id: str) -> str:
    """The application a workflow ID belongs to ("" when it is no application's ID)."""
    prefix = application_id("")
    return workflow_id.removeprefix(prefix) if workflow_id.startswith(prefix) else ""


@workflow.defn(name=APPLICATION_WORKFLOW)
class ApplicationWorkflow:
    @workflow.init
    def __init__(self, run: ApplicationRun) -> None:
        info = workflow.info()
        # Only this workflow's own continue-as-new carries revisions. A cron or retry run
        # repeats its first run's input and reports a continued run too: not trusted.
        carried = info.continued_run_id is not None and info.attempt == 1 and not info.cron_schedule
        if run.revisions and not carried:
            workflow.logger.warning("ignoring %d revisions in the input of a fresh start", len(run.revisions))
        self._revisions: list[Revision] = list(run.revisions) if carried else []
        if run.freezes and not carried:
            workflow.logger.warning("ignoring %d freezes in the input of a fresh start", len(run.freezes))
        self._freezes: list[ManualFreeze] = list(run.freezes) if carried else []
        # Signed orders taken, while their signatures are valid: the same one is refused again.
        self._signed_orders: dict[str, datetime] = dict(run.signed_orders) if carried else {}
        self._orders = 0  # freezes and unfreezes handled in this run (one patch each)
        self._application = application_of(info.workflow_id)
        self._applies = 0
        # One apply at a time: an admission check awaits, and the revision it replaces must stay current.
        self._applying = asyncio.Lock()

    @workflow.run
    async def run(self, run: ApplicationRun) -> None:
        if self._revisions:  # a continued run: its memo starts empty
            self._publish(self._revisions[-1])
        await workflow.wait_condition(
            lambda: (
                workflow.info().is_continue_as_new_suggested()
                or (run.updates_per_run > 0 and self._applies >= run.updates_per_run)
            )
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(
            ApplicationRun(
                revisions=_carried(self._revisions),
                updates_per_run=run.updates_per_run,
                freezes=self._in_force(),  # expired ones stay behind, in this run's history
                signed_orders={k: v for k, v in self._signed_orders.items() if v > workflow.now()},
            )
        )

    # --- apply ---------------------------------------------------------------------------

    @workflow.update(name=APPLY_UPDATE)
    async def apply(self, change: ApplicationChange) -> Applied:
        async with self._applying:
            return await self._apply(change)

    async def _apply(self, change: ApplicationChange) -> Applied:
        app = self._load(change)
        self._applies += 1
        digest = revision_digest(app, change.bundle)
        current = self._revisions[-1] if self._revisions else None
        if current is not None and current.digest == digest:
            return Applied(revision=_listed(current), created=False)
        signed_by = await self._admit(change, digest, current.number if current else 0)
        revision = Revision(
            application=self._application,
            number=len(self._revisions) + 1,
            digest=digest,
            # The admin whose key signed it, when one did; else the name given.
            applied_by=signed_by.split(" [", 1)[0] if signed_by else change.applied_by,
            applied_at=workflow.now(),
            changes=self._changes(current, app, change.bundle),
            comment=change.comment,
            path=change.path,
            bundle=change.bundle,
            signed_by=signed_by,
            source=change.source,
        )
        self._revisions.append(revision)
        self._publish(revision)
        return Applied(revision=_listed(revision), created=True)

    async def _admit(self, change: ApplicationChange, digest: str, replaces: int) -> str:
        """The admin who signed the change ("" where the workers hold no admin keys); a refusal
        fails the update, and the failure stays in history with its reason."""
        if not workflow.patched(f"{SIGNED_APPLIES}-{replaces + 1}"):
            return ""
        check = ApplyAdmission(application=self._application, digest=digest, replaces=replaces, signed=change.signed)
        try:
            signed_by = await workflow.execute_local_activity(
                ADMIT_APPLY,
                check,
                result_type=str,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=3, non_retryable_error_types=[APPLY_REFUSED]),
                summary=f"admit revision {replaces + 1}",
            )
        except (ActivityError, ApplicationError) as exc:
            cause = exc.cause if isinstance(exc, ActivityError) and exc.cause is not None else exc
            reason = cause.message if isinstance(cause, ApplicationError) else str(cause)
            raise ApplicationError(reason, type=APPLY_REFUSED, non_retryable=True) from None
        if not signed_by and any(r.signed_by for r in self._revisions):
            # Admin keys fail closed: a control worker deployed without them must not admit
            # what the others would refuse.
            raise ApplicationError(
                "earlier revisions were signed by an admin, but the worker that took this apply holds no admin "
                "keys: set PRODLINE_ADMIN_KEYS on every control worker",
                type=APPLY_REFUSED,
                non_retryable=True,
            )
        return signed_by

    def _publish(self, current: Revision) -> None:
        """The current revision in the memo: releases resolve against it without a query."""
        workflow.upsert_memo({REVISION_MEMO: {"number": current.number, "digest": current.digest}})

    @apply.validator
    def _validate(self, change: ApplicationChange) -> None:
        size = len(change.source.encode())
        if size > MAX_SOURCE_BYTES:
            raise ApplicationError(
                f"{change.path}: the file is {size // 1024} KB; an application file may be at most "
                f"{MAX_SOURCE_BYTES // 1024} KB",
                type=INVALID_APPLICATION,
                non_retryable=True,
            )
        try:
            app, _ = load_application_text(change.source, change.path or "prodline.yaml")
        except ConfigError as exc:
            raise ApplicationError(str(exc), type=INVALID_APPLICATION, non_retryable=True) from None
        if app.application != self._application:
            where = f"application {self._application!r}" if self._application else "no application"
            raise ApplicationError(
                f"{change.path}:1: application: the file is for {app.application!r}, but this workflow "
                f"({workflow.info().workflow_id}) holds {where}",
                type=INVALID_APPLICATION,
                non_retryable=True,
            )

    def _load(self, change: ApplicationChange) -> Application:
        # The validator accepted this change; on replay it is not run again, the handler is.
        app, _ = load_application_text(change.source, change.path or "prodline.yaml")
        return app

    def _changes(self, current: Revision | None, app: Application, bundle: BundleRef | None) -> list[str]:
        before: Application | None = None
        if current is not None:
            try:
                before, _ = load_application_text(current.source, current.path or "prodline.yaml")
            except ConfigError:
                # Valid when it was applied, refused by today's models: say so, do not get stuck.
                lines = ["the previous revision no longer validates; changes not summarised"]
                return lines + bundle_changes(current.bundle, bundle)
        lines = summarise(before, app)
        if current is not None:
            lines += bundle_changes(current.bundle, bundle)
        # Same settings, different digest: the canonical form changed (a newer prodline).
        return lines or ["no change in the settings"]

    # --- freezes --------------------------------------------------------------------------

    @workflow.update(name=FREEZE_UPDATE)
    def freeze(self, order: FreezeOrder) -> ManualFreeze:
        """Hold releases entering ``order.environment`` ("" : every environment) until lifted."""
        who = self._identify(order)
        freeze = ManualFreeze(
            id=str(workflow.uuid4())[:8],
            environment=order.environment,
            by=who.person,
            reason=order.reason.strip(),
            at=workflow.now(),
            until=order.until,
            verified=who.verified,
        )
        self._freezes = [*self._in_force(), freeze]
        return freeze

    @freeze.validator
    def _validate_freeze(self, order: FreezeOrder) -> None:
        if not order.reason.strip():
            self._refuse("a freeze needs a reason (--reason): whoever waits reads it")
        if not order.by.strip():
            self._refuse("a freeze needs who sets it (--as)")
        self._check_environment(order.environment)
        if order.until is not None and order.until <= workflow.now():
            self._refuse(f"--until {order.until:%Y-%m-%d %H:%M:%S}Z is not in the future")

    @workflow.update(name=UNFREEZE_UPDATE)
    def unfreeze(self, order: UnfreezeOrder) -> list[ManualFreeze]:
        """Lift the freezes in force on ``order.environment`` ("" : every freeze); the lifted ones."""
        self._identify(order)
        lifted = self._matching(order.environment)
        gone = {f.id for f in lifted}
        self._freezes = [f for f in self._in_force() if f.id not in gone]
        return lifted

    @unfreeze.validator
    def _validate_unfreeze(self, order: UnfreezeOrder) -> None:
        if not order.by.strip():
            self._refuse("an unfreeze needs who lifts it (--as)")
        self._check_environment(order.environment)
        if self._matching(order.environment):
            return
        everywhere = [f for f in self._in_force() if not f.environment]
        if order.environment and everywhere:
            by = ", ".join(sorted({f.by for f in everywhere}))
            message = (
                f"{self._application} has no freeze on {order.environment} alone; it is frozen in every "
                f"environment (by {by}): lift that with `prodline unfreeze` without --environment"
            )
        else:
            where = f" on {order.environment}" if order.environment else ""
            message = f"nothing to lift: {self._application} has no freeze in force{where}"
        raise ApplicationError(message, type=NOT_FROZEN, non_retryable=True)

    def _identify(self, order: FreezeOrder | UnfreezeOrder) -> Identity:
        """Who gives the order: its signer where an environment it touches takes signed decisions.

        Checked in the handler, not the validator: a refused signature fails the update, and the
        failure stays in history with its reason, as a refused signed apply does.
        """
        self._orders += 1
        if not workflow.patched(f"{SIGNED_FREEZES}-{self._orders}"):
            return Identity(person=order.by)
        app = self._current_application()
        if app is None:  # no longer validates (a newer prodline): its `verify` settings are unknown
            if order.signed is not None:
                self._refuse("the current revision no longer validates: its keys cannot be read to check the signature")
            return Identity(person=order.by)
        try:
            who = identify_freezer(order, self._application, app, workflow.now())
        except Refused as exc:
            workflow.logger.warning("refused: %s", exc)
            self._refuse(str(exc))
        if who.signature_digest:
            if who.signature_digest in self._signed_orders:
                self._refuse("this signed order was taken already: sign a new one (a signature counts once)")
            assert order.signed is not None
            self._signed_orders[who.signature_digest] = FreezeDocument.parse(order.signed.document).expires_at
        return who

    def _current_application(self) -> Application | None:
        current = self._revisions[-1]
        try:
            app, _ = load_application_text(current.source, current.path or "prodline.yaml")
        except ConfigError:
            return None
        return app

    def _in_force(self) -> list[ManualFreeze]:
        now = workflow.now()
        return [f for f in self._freezes if f.in_force(now)]

    def _matching(self, environment: str) -> list[ManualFreeze]:
        return [f for f in self._in_force() if not environment or f.environment == environment]

    def _check_environment(self, environment: str) -> None:
        """Refuse an application with no revision, and an environment its current revision lacks."""
        if not self._revisions:
            self._refuse(
                f"application {self._application!r} is not registered (register it with "
                "`prodline app apply prodline.yaml`)"
            )
        if not environment:
            return
        current = self._revisions[-1]
        app = self._current_application()
        if app is None:
            # Valid when applied, refused by today's models: a freeze must still be possible.
            workflow.logger.warning("revision %d no longer validates; %r not checked", current.number, environment)
            return
        names = [e.name for e in app.environments]
        if environment not in names:
            self._refuse(
                f"application {self._application} has no environment {environment!r} "
                f"(revision {current.number} has {', '.join(names)})"
            )

    @staticmethod
    def _refuse(message: str) -> NoReturn:
        raise ApplicationError(message, type=FREEZE_REFUSED, non_retryable=True)

    # --- queries --------------------------------------------------------------------------

    @workflow.query(name=REVISION_QUERY)
    def revision(self, number: int) -> Revision | None:
        """Revision ``number`` with its source (0: the current one); None when there is none."""
        if not self._revisions or number < 0 or number > len(self._revisions):
            return None
        return self._revisions[number - 1] if number else self._revisions[-1]

    @workflow.query(name=REVISIONS_QUERY)
    def revisions(self) -> list[Revision]:
        """Every revision, oldest first, without sources (a small answer)."""
        return [_listed(r) for r in self._revisions]

    @workflow.query(name=FREEZES_QUERY)
    def freezes(self) -> list[ManualFreeze]:
        """Every manual freeze kept, oldest first: expired ones too (the reader compares ``until``
        with its own clock; a query answers from state, whenever the worker last ran the workflow)."""
        return list(self._freezes)


def _listed(revision: Revision) -> Revision:
    return revision.model_copy(update={"source": ""})


def _carried(revisions: list[Revision]) -> list[Revision]:
    """Revisions for the next run: the newest sources up to the budget, the rest without."""
    budget = CARRIED_SOURCE_BYTES
    out = []
    for revision in reversed(revisions):
        size = len(revision.source.encode())
        if size <= budget:
            budget -= size
            out.append(revision)
        else:
            budget = 0  # older ones are not kept either: the sources carried are the newest
            out.append(_listed(revision))
    return out[::-1]
