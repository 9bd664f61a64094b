"""The ``kubernetes.aio`` client at the edge: making it, and turning its errors into the orchestrator's.

Only the ``k8s_*`` modules and ``runtime.kubernetes`` import ``kubernetes``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
from kubernetes.aio import client as k8s
from kubernetes.aio.config import ConfigException, load_incluster_config, load_kube_config
from pydantic import ValidationError

from orchestrator.config import KubernetesSettings
from orchestrator.errors import (
    ConfigError,
    ContainerNotFound,
    DockerUnavailable,
    OrchestratorError,
    RuntimeFailure,
)

FIX_API = "check ORCH_KUBERNETES__KUBECONFIG (or the in-cluster service account) and that the cluster is up"


def _status_body(err: k8s.ApiException) -> dict[str, Any]:
    try:
        body = json.loads(err.body or "")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def api_message(err: k8s.ApiException) -> str:
    """The API server's own words (the ``message`` of its Status body), else the HTTP status."""
    message = _status_body(err).get("message")
    return message if isinstance(message, str) else f"{err.status} {err.reason or ''}".strip()


def _missing_namespace(err: k8s.ApiException) -> str | None:
    details = _status_body(err).get("details")
    if err.status == 404 and isinstance(details, dict) and details.get("kind") == "namespaces":
        return str(details.get("name", ""))
    return None


@contextlib.contextmanager
def vendor_errors(action: str) -> Iterator[None]:
    """Turn the client's, aiohttp's and pydantic's errors raised while doing ``action`` into ours.

    A missing namespace is a ``ConfigError``; any other 404 ``ContainerNotFound`` (callers that
    expect another object's absence catch it);
    401/403 and other refusals ``RuntimeFailure``; no answer or a 5xx ``DockerUnavailable`` (the
    error tree's "engine does not answer"); a bad kubeconfig ``ConfigError``.
    """
    try:
        yield
    except OrchestratorError:
        raise
    except k8s.ApiException as err:
        message, status = api_message(err), err.status or 0
        namespace = _missing_namespace(err)
        if namespace is not None:
            raise ConfigError(
                f"{action}: namespace {namespace!r} does not exist; apply deploy/kubernetes (kubectl apply -k) "
                "or set ORCH_KUBERNETES__NAMESPACE"
            ) from err
        if status == 404:
            raise ContainerNotFound(f"{action}: {message}; it was removed or never created") from err
        if status in (401, 403):
            raise RuntimeFailure(
                f"{action}: the API server refused this client ({message}); apply the RBAC of "
                f"deploy/kubernetes or {FIX_API}"
            ) from err
        if status >= 500:
            raise DockerUnavailable(
                f"{action}: the Kubernetes API server failed ({message}); {FIX_API}"
            ) from err
        raise RuntimeFailure(f"{action}: the API server refused ({message})") from err
    except ConfigException as err:
        raise ConfigError(f"{action}: {err}; {FIX_API}") from err
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(map(str, first["loc"]))
        raise RuntimeFailure(
            f"{action}: the object does not fit the Kubernetes API schema ({where}: {first['msg']})"
        ) from err
    except (aiohttp.ClientError, OSError, TimeoutError) as err:
        raise DockerUnavailable(
            f"{action}: the Kubernetes API server does not answer ({type(err).__name__}: {err}); {FIX_API}"
        ) from err


async def load_client(config: KubernetesSettings) -> k8s.ApiClient:
    """A client for the cluster ``config`` names: its kubeconfig, else the in-cluster service account."""
    configuration = k8s.Configuration()
    if config.kubeconfig is None:
        with vendor_errors("load the in-cluster service account (no ORCH_KUBERNETES__KUBECONFIG)"):
            load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return k8s.ApiClient(configuration)
    path = config.kubeconfig
    if not path.is_file():
        raise ConfigError(
            f"kubeconfig {str(path)!r} is not a file: fix ORCH_KUBERNETES__KUBECONFIG, or unset it to use the "
            "in-cluster service account"
        )
    try:
        await load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(path),
            context=config.context,
            client_configuration=configuration,
            persist_config=False,
        )
    except Exception as err:  # YAML, file and auth-plugin errors alike: each says the file is unusable
        raise ConfigError(
            f"kubeconfig {str(path)!r} cannot be used ({type(err).__name__}: {str(err)[:300]}); fix it or "
            "ORCH_KUBERNETES__KUBECONFIG"
        ) from err
    return k8s.ApiClient(configuration)


def to_dict(api: k8s.ApiClient, model: Any) -> dict[str, Any]:
    """A client model as the JSON the API server sent (camelCase keys)."""
    raw: dict[str, Any] = api.sanitize_for_serialization(model)  # type: ignore[no-untyped-call]
    return raw
