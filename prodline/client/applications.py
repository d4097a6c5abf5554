"""Registered applications: apply an application file as a new revision, read revisions back.

Each application is one long-lived workflow (``workflows/application.py``, ID
``application:NAME``) on the control task queue. ``apply`` checks the file
locally first (located errors at once, exit 2), packs and uploads the files its
rules run, then sends the change as an update-with-start: the first apply
creates the workflow, later ones reach the running one. The workflow validates
the change again and computes its digest itself; what it answers is what counts.

Reads are queries, answered by a worker: without one they fail fast with
:class:`~prodline.errors.Unavailable`, naming the task queue.

Manual freezes are updates of the same workflow (``freeze``, ``unfreeze``) and a query
(``freezes``); an application never registered has no workflow to hold them, and says so.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from prodline.artifacts.store import ArtifactStore
from prodline.config.application import Application
from prodline.config.errors import ConfigError
from prodline.config.freezes import (
    FREEZE_REFUSED,
    FREEZE_UPDATE,
    NOT_FROZEN,
    UNFREEZE_UPDATE,
    FreezeOrder,
    ManualFreeze,
    UnfreezeOrder,
)
from prodline.config.loader import file_kind, load_application, load_application_text
from prodline.config.release import BundleRef, revision_digest
from prodline.config.yamlsource import Document, read_yaml
from prodline.contracts import APPLY_REFUSED, APPLY_UPDATE, ApplicationChange, Applied, Revision, application_id
from prodline.errors import InvalidInput, NotFound, Unavailable, WrongState
from prodline.identity.documents import ApplyDocument, FreezeDocument, Signed
from prodline.workflows.application import ApplicationRun, ApplicationWorkflow

from . import workers
from .signatures import Signer

if TYPE_CHECKING:
    from prodline.artifacts.bundle import Packed

# How long a worker has to take an apply, or answer a read, before the CLI says none does
# (an application workflow no worker has cached is replayed first).
APPLY_SECONDS = 10
ANSWER_SECONDS = 5
# How long a worker that has just started may take to show up among a task queue's pollers.
POLLER_GRACE_SECONDS = 5

Handle = WorkflowHandle[ApplicationWorkflow, None]


class ApplyRefused(WrongState):
    """The workers' admin keys refused the change (unsigned, or not by an admin): nothing changed."""


@dataclass(frozen=True)
class LocalApplication:
    """An application file on disk, validated, with where its bundle starts."""

    path: Path
    app: Application
    doc: Document
    source: str
    root: Path  # the bundle's root folder (absolute)
    inside: str  # the file's path inside the bundle, POSIX


@dataclass(frozen=True)
class Comparison:
    """A local application file against the registered revision (``app diff``)."""

    local: LocalApplication
    registered: Revision  # with its source
    bundle: BundleRef  # the local files the rules would run
    digest: str  # the local file's, as `apply` would register it
    config_same: bool  # the same settings, however formatted

    @property
    def same(self) -> bool:
        # The digest says it, unless another prodline version computed it: then the parts do.
        return self.digest == self.registered.digest or (self.config_same and self.bundle_same)

    @property
    def bundle_same(self) -> bool:
        return self.registered.bundle is not None and self.registered.bundle.digest == self.bundle.digest


def read_local(path: Path) -> LocalApplication:
    """Validate the file (ConfigError, located) and find its bundle root."""
    app, doc = load_application(path)
    source = path.read_text(encoding="utf-8")
    root = (path.parent / app.bundle.root).resolve()
    if not root.is_dir():
        raise ConfigError([doc.problem(("bundle", "root"), f"{root} is not a folder", "use . or a folder above")])
    try:
        inside = path.resolve().relative_to(root).as_posix()
    except ValueError:
        raise ConfigError(
            [
                doc.problem(
                    ("bundle", "root"),
                    f"{root} does not contain the application file",
                    "the root is this file's folder (.) or one above it (..)",
                )
            ]
        ) from None
    return LocalApplication(path, app, doc, source, root, inside)


class ApplicationClient:
    """prodline's registered applications in one Temporal namespace."""

    def __init__(self, client: Client, task_queue: str):
        self.temporal = client
        self.task_queue = task_queue

    def handle(self, name: str) -> Handle:
        return self.temporal.get_workflow_handle_for(ApplicationWorkflow.run, application_id(name))

    # --- apply ----------------------------------------------------------------------------

    async def apply(
        self,
        path: Path,
        applied_by: str,
        store: ArtifactStore,
        comment: str = "",
        *,
        on_warning: Callable[[str], None] | None = None,
        signer: Signer | None = None,
    ) -> Applied:
        """Register the file as the application's new revision (or find it current already).

        With a ``signer``, an admin signs the change: an ApplyDocument naming the revision's
        digest, computed as the workflow computes it, and the revision it replaces (so the
        signature is good for this one step only). The workers verify it against their admin keys.
        """
        from prodline.artifacts.bundle import upload  # packing costs imports only apply needs

        local = read_local(path)
        with await asyncio.to_thread(_pack, local) as packed:
            for warning in packed.warnings:
                if on_warning is not None:
                    on_warning(warning)
            await asyncio.to_thread(upload, packed, store)
            bundle = packed.ref
        change = ApplicationChange(
            source=local.source, path=local.inside, bundle=bundle, applied_by=applied_by, comment=comment
        )
        if signer is not None:
            name = local.app.application
            current = await self.current(name)
            document = signer.document(
                ApplyDocument,
                application=name,
                digest=revision_digest(local.app, bundle),
                replaces=current.number if current is not None else 0,
            )
            change = change.model_copy(update={"signed": signer.sign(document)})
        return await self.send(local.app.application, change)

    async def send(self, name: str, change: ApplicationChange) -> Applied:
        """Send a change to the application's workflow, starting it on the first apply."""
        queue = await self._queue_of(name) or self.task_queue
        await self._require_worker(queue)
        start = WithStartWorkflowOperation(
            ApplicationWorkflow.run,
            ApplicationRun(),
            id=application_id(name),
            task_queue=self.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            # A closed application workflow (terminated by someone) is not silently replaced by an
            # empty one: its revisions would start again at 1.
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            static_summary=f"application {name}",
        )
        try:
            # By name: the SDK types an async update method's result as a coroutine.
            applied: Applied = await self.temporal.execute_update_with_start_workflow(
                APPLY_UPDATE,
                change,
                start_workflow_operation=start,
                result_type=Applied,
                rpc_timeout=timedelta(seconds=APPLY_SECONDS),
            )
            return applied
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError) and cause.type == APPLY_REFUSED:
                raise ApplyRefused(f"app apply refused: {cause.message}") from None
            if isinstance(cause, ApplicationError):
                raise InvalidInput(f"Temporal refused the change to {name}:\n{cause.message}") from None
            raise
        except WorkflowAlreadyStartedError:
            raise WrongState(
                f"the workflow of application {name} ({application_id(name)}) was closed; its revisions are in "
                "its history. Registering again would start over at revision 1: delete the closed workflow "
                f"first (`temporal workflow delete --workflow-id {application_id(name)}`) if that is meant"
            ) from None
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            raise Unavailable(
                f"no worker took the change to {name} within {APPLY_SECONDS}s on task queue {queue!r}; "
                f"it may still be applied once one does (check `prodline app show {name}`)"
            ) from None
        finally:
            await _settle(start)

    # --- freezes ---------------------------------------------------------------------------

    async def freeze(
        self,
        application: str,
        environment: str,
        by: str,
        reason: str,
        until: datetime | None = None,
        signer: Signer | None = None,
    ) -> ManualFreeze:
        """Freeze ``environment`` ("" : every environment) of a registered application until lifted
        (or ``until``, aware). The workflow refuses an unknown environment or an empty reason, and
        an unsigned freeze where the environment (any, for all) says ``verify: ssh``."""
        order = FreezeOrder(environment=environment, by=by, reason=reason, until=until)
        if signer is not None:
            order.signed = _signed_order(signer, "freeze", application, order)
        freeze: ManualFreeze = await self._order(application, FREEZE_UPDATE, order, ManualFreeze)
        return freeze

    async def unfreeze(
        self, application: str, environment: str, by: str, reason: str = "", signer: Signer | None = None
    ) -> list[ManualFreeze]:
        """Lift the freezes in force on ``environment`` ("" : every one); the lifted ones.
        :class:`~prodline.errors.WrongState` when none matched."""
        order = UnfreezeOrder(environment=environment, by=by, reason=reason)
        if signer is not None:
            order.signed = _signed_order(signer, "unfreeze", application, order)
        lifted: list[ManualFreeze] = await self._order(application, UNFREEZE_UPDATE, order, list[ManualFreeze])
        return lifted

    async def freezes(self, application: str) -> list[ManualFreeze]:
        """Every manual freeze the application keeps, expired ones too (compare ``until`` with now)."""
        found = await self._query(application, ApplicationWorkflow.freezes, missing=_MISSING)
        if found is _MISSING:
            raise _not_registered(application)
        return found

    async def _order(self, name: str, what: str, order: BaseModel, result_type: Any) -> Any:
        """Send a freeze or unfreeze update to the running application workflow (never starts it)."""
        queue = await self._queue_of(name)
        if queue is None:
            raise _not_registered(name)
        await self._require_worker(queue)
        try:
            return await self.handle(name).execute_update(
                what, order, result_type=result_type, rpc_timeout=timedelta(seconds=APPLY_SECONDS)
            )
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError) and cause.type == NOT_FROZEN:
                raise WrongState(f"{what} refused: {cause.message}") from None
            if isinstance(cause, ApplicationError) and cause.type == FREEZE_REFUSED:
                raise InvalidInput(f"{what} refused: {cause.message}") from None
            raise
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            raise Unavailable(
                f"no worker took the {what} of {name} within {APPLY_SECONDS}s on task queue {queue!r}; "
                f"it may still take effect once one does"
            ) from None
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND and "namespace" not in exc.message.lower():
                raise WrongState(
                    f"the workflow of application {name} ({application_id(name)}) is closed: it can hold no "
                    "freeze (register the application again with `prodline app apply`)"
                ) from None
            raise

    # --- reading ----------------------------------------------------------------------------

    async def current(self, name: str) -> Revision | None:
        """The current revision, with its source; None when the application was never registered."""
        return await self._query(name, ApplicationWorkflow.revision, 0, missing=None)

    async def revision(self, name: str, number: int) -> Revision | None:
        """Revision ``number`` (0: the current one); None when there is no such revision."""
        found = await self._query(name, ApplicationWorkflow.revision, number, missing=_MISSING)
        if found is _MISSING:
            raise _not_registered(name)
        return found

    async def history(self, name: str) -> list[Revision]:
        """Every revision, oldest first, without their sources."""
        found = await self._query(name, ApplicationWorkflow.revisions, missing=_MISSING)
        if found is _MISSING:
            raise _not_registered(name)
        return found

    async def compare(self, name: str, path: Path) -> Comparison:
        """A local file against the current revision of ``name``; NotFound when none is registered."""
        local = read_local(path)
        registered = await self.current(name)
        if registered is None:
            raise _not_registered(name)
        with await asyncio.to_thread(_pack, local) as packed:
            bundle: BundleRef = packed.ref
        try:
            theirs, _ = load_application_text(registered.source, registered.path or "prodline.yaml")
            config_same = theirs == local.app
        except ConfigError:  # valid when applied, refused by this prodline's models
            config_same = False
        return Comparison(local, registered, bundle, revision_digest(local.app, bundle), config_same)

    async def _query(self, name: str, query: Callable[..., Any], *args: Any, missing: Any) -> Any:
        queue = await self._queue_of(name)
        if queue is None:
            return missing
        await self._require_worker(queue)
        try:
            return await self.handle(name).query(query, *args, rpc_timeout=timedelta(seconds=ANSWER_SECONDS))
        except RPCError as exc:
            if exc.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
                raise Unavailable(
                    f"no worker answered for application {name} within {ANSWER_SECONDS}s on task queue {queue!r} "
                    "(start `prodline dev` or `prodline worker`)"
                ) from None
            raise
        except WorkflowQueryFailedError as exc:
            raise Unavailable(f"application {name} could not answer: {exc}") from None

    async def _queue_of(self, name: str) -> str | None:
        """The task queue the application's workflow runs on; None when it was never started."""
        try:
            return (await self.handle(name).describe()).task_queue
        except RPCError as exc:
            # An unknown namespace is NOT_FOUND too: it goes on as it is, for the CLI to name.
            if exc.status == RPCStatusCode.NOT_FOUND and "namespace" not in exc.message.lower():
                return None
            raise

    async def _require_worker(self, queue: str) -> None:
        """Refuse before sending anything when no worker polls ``queue``: a change sent there would
        wait, and could be applied much later, long after the CLI gave up on it."""
        # A worker that has just started (`prodline dev --detach`, then `app apply`) shows up
        # among the pollers only once its first poll arrives: look again for a moment.
        deadline = time.monotonic() + POLLER_GRACE_SECONDS
        while True:
            try:
                if await workers.polling(self.temporal, queue):
                    return
            except RPCError:
                return  # cannot tell: the apply's own timeout still says so
            if time.monotonic() >= deadline:
                raise Unavailable(
                    f"no worker is polling task queue {queue!r}; nothing was registered "
                    "(start `prodline dev` or `prodline worker`)"
                )
            await asyncio.sleep(0.2)


def _pack(local: LocalApplication) -> Packed:
    """The files the application's rules run: its folder without the application file and
    without the services' folders below it.

    The application file's text is the revision's source already; inside the bundle a comment
    edit would count as new files (a new revision, `app diff` saying "different"). A service's
    folder is that service's own bundle, owned by its team: a change there must not change the
    application.
    """
    from prodline.artifacts.bundle import pack
    from prodline.artifacts.listing import list_bundle

    left_out = [local.inside]
    for entry in list_bundle(local.root, left_out).entries:
        if entry.link is None and _is_service_file(entry.rel, Path(entry.file)):
            folder = entry.rel.rpartition("/")[0]
            left_out.append(folder or entry.rel)  # a service beside the application: just its file
    return pack(local.root, exclude=left_out)


def _is_service_file(rel: str, path: Path) -> bool:
    name = rel.rsplit("/", 1)[-1]
    if not (name.startswith("prodline.") or name.endswith(".prodline.yaml")) or not name.endswith(".yaml"):
        return False
    try:
        return file_kind(read_yaml(path)) == "service"
    except ConfigError:
        return False


async def _settle(start: WithStartWorkflowOperation) -> None:
    """Collect the start operation's outcome, which the SDK keeps apart from the update's: an
    error left in it is otherwise printed as "Future exception was never retrieved"."""
    try:
        await asyncio.wait_for(start.workflow_handle(), 0.01)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # our own cancellation (Ctrl-C), not the operation's
    except Exception:
        pass  # the update's error says what went wrong


class _Missing:
    pass


_MISSING: Any = _Missing()


def _not_registered(name: str) -> NotFound:
    return NotFound(f"application {name!r} is not registered (register it with `prodline app apply prodline.yaml`)")


def _signed_order(
    signer: Signer, action: Literal["freeze", "unfreeze"], application: str, order: FreezeOrder | UnfreezeOrder
) -> Signed:
    """The order's FreezeDocument, signed: exactly what the workflow compares the order with."""
    document = signer.document(
        FreezeDocument,
        action=action,
        application=application,
        environment=order.environment,
        reason=order.reason,
        until=order.until if isinstance(order, FreezeOrder) else None,
        nonce=uuid.uuid4().hex,
    )
    return signer.sign(document)
