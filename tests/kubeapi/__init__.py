"""A fake Kubernetes API server for the tests: ``from kubeapi import FakeCluster``.

No real API server can run here (no kube-apiserver, no etcd, no network), yet the
Kubernetes and Argo Rollouts steps must be tested through the REAL ``kubernetes`` client
(DynamicClient and the typed APIs) over HTTP. :class:`FakeCluster` is a pure-Python
``ThreadingHTTPServer`` on 127.0.0.1 (a free port, a daemon thread) that answers the
requests that client really sends::

    with FakeCluster(ready_after=2) as cluster:
        api = kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig(tmp_path / "kc")))
        dyn = DynamicClient(api, cache_file=str(tmp_path / "discovery.json"))
        ...
        assert cluster.count("PATCH", content_type="apply-patch", dry_run=False) == 1

What it implements
------------------
* Discovery: ``/version``, ``/api``, ``/apis``, ``/apis/G``, ``/api/v1``, ``/apis/G/V`` with
  ``x/status`` subresource entries; core v1 namespaces, configmaps, secrets, services,
  serviceaccounts; apps/v1 deployments, statefulsets, daemonsets; apiextensions.k8s.io/v1
  customresourcedefinitions; and the resources of every stored CRD once it is Established
  (``preinstalled_crds=["rollouts.argoproj.io"]`` for Argo Rollouts from the start).
* Objects: GET, LIST (``labelSelector`` with ``=``, ``==``, ``!=``, existence, ``in``,
  ``notin``; ``fieldSelector`` on metadata.name/namespace), POST, PUT, DELETE, and PATCH as
  server-side apply (``application/apply-patch+yaml``, ``fieldManager`` required, ``force``
  accepted), JSON merge patch, strategic merge patch (treated as a merge patch) and JSON
  patch; ``/status`` for the kinds that have it; ``dryRun=All`` everywhere.
* Server fields: uid, resourceVersion (one global counter; a no-op write keeps it),
  generation (1, then +1 when anything outside metadata and status changes),
  creationTimestamp, managedFields (one entry per manager and operation), and the defaults
  a client can see (Deployment replicas/strategy/progressDeadlineSeconds, StatefulSet
  updateStrategy as ``SetDefaults_StatefulSet`` does it, DaemonSet updateStrategy ...).
* Errors as ``Status`` objects with the real reasons and messages (NotFound, AlreadyExists,
  Conflict, Invalid, BadRequest ...); ``fail_next`` injects any error.
* Controllers for Deployment, StatefulSet, DaemonSet, CRD and Argo Rollout (canary) status,
  advanced one tick per GET of the object: deterministic, no timers (see ``controller``).

Test helpers (none of them go through HTTP, none is logged, none ticks a controller but ``tick``)
-------------------------------------------------------------------------------------------------
``url``; ``kubeconfig(path, context="fake", namespace="default")``; ``requests`` (a list of
:class:`Request`: method, path, query, content_type, body, dry_run) and ``count(method,
path_contains=, dry_run=, content_type=)`` (substring matches); ``get(api_version, kind,
name, namespace)``, ``objects(kind)``; ``put(obj)`` (as if someone else made it: server
fields and defaults set, status kept, the namespace need not exist); ``edit(api_version,
kind, name, namespace, fn)`` (drift); ``fail_next(method, path_contains, status, message,
times)`` (an error Status, reason from the code); ``tick(api_version, kind, name,
namespace, times)``.

How it differs from a real API server (deliberately)
----------------------------------------------------
* Server-side apply is per manager and simplified: the fields a manager applied last time
  and no longer applies are removed, then its configuration is deep-merged in; lists are
  replaced whole (no merge by key such as ``containers[name]``); there are no field
  conflicts between managers (``force`` changes nothing) and a field another manager also
  set is still removed.
* A strategic merge patch is a plain JSON merge patch (no patch strategies, no ``$patch``).
* No watches (``watch=true`` gets 405: poll with GET), no ``deletecollection``, no
  pagination (``limit``/``continue`` ignored), no ``generateName``, no finalizers, owner
  references or garbage collection; deleting a Namespace or a CRD removes its objects at once.
* No authentication, authorization, admission or schema validation: only a name, the
  URL's kind/apiVersion/namespace, a workload's ``spec.selector``/``spec.template`` and a
  CRD's names are checked. Secrets' ``stringData`` is not folded into ``data``.
* No Pods, ReplicaSets, AnalysisRuns or nodes behind the status: status is the controllers'
  story told tick by tick (a DaemonSet always has 3 nodes).
* ``Status.details.kind`` is the resource (``deployments``) for NotFound/AlreadyExists/Conflict,
  as the real server writes it, and the Kind for Invalid.
* Discovery is only the legacy APIGroupList/APIResourceList (no aggregated discovery, no
  OpenAPI); ``/version`` says v1.31.0-fake.
"""

from .server import ApiError, FakeCluster, Request, label_selector_matches

__all__ = ["ApiError", "FakeCluster", "Request", "label_selector_matches"]
