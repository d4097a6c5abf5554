"""The sandbox prodline's workflows run in: Temporal's default, with the signature verifier's
libraries passed through.

Workflow code checks SSH signatures (``prodline.identity.verify``). ``cryptography`` does
part of that in native code that imports Python modules as it goes; inside Temporal's
sandbox each such import would be a fresh, sandboxed import of a native extension, which
the sandbox flags (and cannot load twice). Both libraries are deterministic and keep no
state a workflow could observe, so they are shared with the worker, as the standard
library is. Every worker and replayer of prodline's workflows uses this runner.
"""

from __future__ import annotations

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

WORKFLOW_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules("cryptography", "sshsig")
)
