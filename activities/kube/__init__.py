"""Kubernetes access for the ``kubernetes`` and ``rollout`` steps.

The package is layered so that most of it can be tested without a cluster:

Pure logic (no I/O, no client; plain dicts in, plain values out):

- ``manifests``: load YAML manifests from the service folder, render string
  leaves, apply per-environment overrides (images, replicas, patches), label
  ApplySet members, order objects for install (Namespaces, CRDs, then the
  rest), object keys and the digest of a rendered set.
- ``diff``: strip server-managed fields, mask Secret values, diff a live object
  against its dry-run result, describe a set of diffs for humans, and the
  digest of those (masked) diffs that approvers sign off on.
- ``health``: read a workload's status (Deployment, StatefulSet, DaemonSet,
  Job, ...) the way ``kubectl rollout status`` does -> ``Health`` or
  ``Unhealthy``.
- ``canary``: read an Argo Rollout's phase and canary position, and build the
  promote / unpause / abort patches the kubectl plugin sends.

Client access (the only modules that talk to an API server):

- ``cluster``: one shared ``DynamicClient`` per cluster (kubeconfig path +
  context, or in-cluster), built into its own ``Configuration`` (never the
  client library's global state), with a private discovery cache that
  ``refresh()`` invalidates after CRDs are installed.
- ``api``: thin adapters over that client (discover, server-side apply with
  dry-run, get, list, delete, status merge-patch) that map API errors to
  Temporal ``ApplicationError``: 4xx are non-retryable with the server's
  message and the object's key; 5xx, 429 and connection errors are retryable.
- ``prune``: the ApplySet parent Secret and deleting members that are no
  longer in the set (never Namespaces or CRDs).

Runners (``activities/steps/kubernetes.py`` and ``rollout.py``) put these
together into plan / apply / wait / fetch / promote / abort. Blocking client
calls run in a thread so activity heartbeats keep flowing.
"""
