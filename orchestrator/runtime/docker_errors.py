"""The Docker engine's errors at the edge: docker-py's and requests' exceptions become the orchestrator's.

``vendor_errors`` wraps every call ``DockerRuntime`` and ``docker_logs`` make to the engine, so that
nothing past the Docker runtime sees a vendor exception (``raise ... from`` keeps the cause):

==========================================================  ======================
docker-py / requests                                        orchestrator
==========================================================  ======================
``docker.errors.ImageNotFound``                             ``ImageMissing``
``docker.errors.NotFound``                                  ``ContainerNotFound``
``docker.errors.APIError`` (any other refusal)              ``RuntimeFailure``
``requests.RequestException``, ``DockerException``,         ``DockerUnavailable``
``OSError`` (no answer)
==========================================================  ======================

An ``OrchestratorError`` passes through unchanged. Only ``runtime.docker`` and its ``docker_*``
modules import ``docker``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import docker.errors
import requests.exceptions

from orchestrator.errors import (
    ContainerNotFound,
    DockerUnavailable,
    ImageMissing,
    OrchestratorError,
    RuntimeFailure,
)

FIX_ENGINE = "start the engine (scripts/docker-engine) or point DOCKER_HOST at one"


@contextlib.contextmanager
def vendor_errors(action: str, container_id: str | None = None) -> Iterator[None]:
    """Turn docker-py and requests errors raised while doing ``action`` into the orchestrator's."""
    try:
        yield
    except OrchestratorError:
        raise
    except docker.errors.ImageNotFound as err:
        raise ImageMissing(f"{action}: image not found ({err.explanation}); build it first") from err
    except docker.errors.NotFound as err:
        raise ContainerNotFound(
            f"{action}: no container {container_id or ''} ({err.explanation}); it was removed"
        ) from err
    except docker.errors.APIError as err:
        raise RuntimeFailure(f"{action}: the engine refused ({err.explanation or err})") from err
    except (requests.exceptions.RequestException, docker.errors.DockerException, OSError) as err:
        raise DockerUnavailable(f"{action}: the Docker engine does not answer ({err}); {FIX_ENGINE}") from err
