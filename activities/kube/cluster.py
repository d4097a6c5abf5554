"""One shared ``DynamicClient`` per cluster, built without touching the client's global state.

A worker may deploy to several clusters at once (one kubeconfig per
environment), so every client gets its own ``Configuration``: never
``load_kube_config()`` into the library's default, which the next step would
overwrite. Clients are kept per process, keyed by kubeconfig path, context and
the file's modification (a rewritten kubeconfig, rotated credentials, gives a
new client), or by "in-cluster".

Discovery is cached in a folder only this process uses: the library's default,
``$TMPDIR/osrcp-<md5(host)>.json``, is shared by every user of the machine (one
could feed another a false map of the API). :meth:`Cluster.refresh` forgets it
after CRDs are installed, so their kinds are found.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import urllib3.exceptions
import yaml
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException
from kubernetes.config import ConfigException, load_incluster_config, new_client_from_config
from kubernetes.dynamic import DynamicClient
from temporalio.exceptions import ApplicationError

from prodline.contracts import NON_RETRYABLE_CONFIG

DEFAULT_KUBECONFIG = "~/.kube/config"
# Retryable: the cluster (or the way to it) is having a bad moment, not the manifests.
UNAVAILABLE = "KubernetesUnavailable"


@dataclass(frozen=True)
class Target:
    """Which cluster, as a step names it (rendered): a kubeconfig file and context, or the pod's own."""

    kubeconfig: str | None = None
    context: str | None = None
    in_cluster: bool = False
    # The environment's own `env: {KUBECONFIG: ...}` in the application file: the platform team
    # says where each environment's cluster credentials are, as for every tool a step runs.
    environment_kubeconfig: str | None = None
    step: str = ""  # for error messages: "step deploy"
    field_prefix: str = "kubernetes"  # the step's kind: its YAML key, named in errors

    def kubeconfig_path(self) -> Path:
        """The step's kubeconfig, else the environment's KUBECONFIG, else the worker's (its first
        file), else ~/.kube/config."""
        given = (
            self.kubeconfig
            or _first(self.environment_kubeconfig or "")
            or _first(os.environ.get("KUBECONFIG", ""))
            or DEFAULT_KUBECONFIG
        )
        return Path(given).expanduser()

    def kubeconfig_source(self) -> str:
        """Where :meth:`kubeconfig_path` came from, for an error that says what to change."""
        if self.kubeconfig:
            return f"{self.field_prefix}.kubeconfig"
        if self.environment_kubeconfig:
            return "the environment's env.KUBECONFIG in the application file"
        return "$KUBECONFIG on the worker" if os.environ.get("KUBECONFIG") else DEFAULT_KUBECONFIG


def _first(paths: str) -> str:
    return paths.split(os.pathsep)[0]


@dataclass
class Cluster:
    """A cluster's client, shared by every step of the process that talks to it."""

    client: DynamicClient
    name: str  # what errors call it: the kubeconfig and context, or "in-cluster"
    # Discovery is lazy and caches into one file: lookups from several threads take turns.
    lock: threading.RLock = field(default_factory=threading.RLock)

    def refresh(self) -> None:
        """Forget discovery (after CRDs were installed): the next lookup reads the API anew."""
        with self.lock:
            self.client.resources.invalidate_cache()


_clusters: dict[tuple[str, ...], Cluster] = {}
_clusters_lock = threading.Lock()


def cluster_for(target: Target) -> Cluster:
    """The process's client for ``target``, made on first use; a config error names the step field."""
    key, make = _key_and_factory(target)
    with _clusters_lock:
        found = _clusters.get(key)
        if found is None:
            found = _clusters[key] = make()
        return found


def _key_and_factory(target: Target) -> tuple[tuple[str, ...], functools.partial[Cluster]]:
    if target.in_cluster:
        return ("in-cluster",), functools.partial(_in_cluster, target)
    path = target.kubeconfig_path()
    try:
        stat = path.stat()
    except OSError:
        source = target.kubeconfig_source()
        fix = (
            "the platform team puts that file on this environment's workers, or fixes the path"
            if target.environment_kubeconfig and not target.kubeconfig
            else f"set {target.field_prefix}.kubeconfig to a kubeconfig file on the worker, or "
            f"{target.field_prefix}.in_cluster: true when the worker runs in the cluster"
        )
        raise _config_error(target, f"kubeconfig {path} (from {source}) does not exist on the worker: {fix}") from None
    key = (str(path.resolve()), target.context or "", str(stat.st_mtime_ns), str(stat.st_size))
    return key, functools.partial(_from_kubeconfig, target, path)


def _from_kubeconfig(target: Target, path: Path) -> Cluster:
    try:
        api = new_client_from_config(config_file=str(path), context=target.context, persist_config=False)
    except (ConfigException, OSError, ValueError, TypeError, KeyError, yaml.YAMLError) as exc:
        what = f"context {target.context!r}" if target.context else "its current context"
        raise _config_error(
            target,
            f"kubeconfig {path}, {what}: {exc}. Fix {target.field_prefix}.context (or the kubeconfig's "
            "current-context) to name a context the file has",
        ) from None
    name = f"{path} ({target.context or 'current context'})"
    return Cluster(_dynamic(api, name), name)


def _in_cluster(target: Target) -> Cluster:
    configuration = Configuration()
    try:
        load_incluster_config(client_configuration=configuration)
    except ConfigException as exc:
        raise _config_error(
            target,
            f"{target.field_prefix}.in_cluster is set but the worker is not running in a pod with a "
            f"service account ({exc}); give {target.field_prefix}.kubeconfig instead",
        ) from None
    return Cluster(_dynamic(ApiClient(configuration), "in-cluster"), "in-cluster")


def _dynamic(api: ApiClient, name: str) -> DynamicClient:
    """The client; making one reads discovery (``/version``, ``/apis``), so it can fail like any call."""
    cache = _discovery_dir() / (hashlib.sha256(name.encode()).hexdigest()[:16] + ".json")
    try:
        return DynamicClient(api, cache_file=str(cache))
    except ApiException as exc:
        status = exc.status or 0
        message = f"the cluster {name} answered discovery with HTTP {status} {exc.reason or ''}".rstrip()
        if 400 <= status < 500 and status != 429:  # credentials refused, or not an API server
            raise ApplicationError(message, status, type=NON_RETRYABLE_CONFIG, non_retryable=True) from None
        raise ApplicationError(message, status, type=UNAVAILABLE) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise ApplicationError(f"cannot reach the cluster {name}: {exc}", type=UNAVAILABLE) from None


@functools.cache
def _discovery_dir() -> Path:
    """This process's own folder for discovery caches (mode 0700), removed when it exits."""
    folder = Path(tempfile.mkdtemp(prefix=f"prodline-kube-{os.getpid()}-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def _config_error(target: Target, message: str) -> ApplicationError:
    prefix = f"step {target.step}: " if target.step else ""
    return ApplicationError(prefix + message, type=NON_RETRYABLE_CONFIG, non_retryable=True)
