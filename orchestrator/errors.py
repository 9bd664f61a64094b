"""The one error tree of the orchestrator.

Every error the orchestrator raises on purpose is an ``OrchestratorError``. Each class knows the
CLI exit code (``../spec/FLOW.md``) and the HTTP status (``API_SPEC.md``) it maps to, and a stable
``code`` string used in API error bodies ``{"error": {"code", "message"}}``::

    OrchestratorError                     exit 1  HTTP 500  internal
    ├── UsageError                        exit 2  HTTP 400  bad_request
    │   ├── InvalidIdentifier             exit 2  HTTP 400  invalid_id
    │   ├── UnsafeMount                   exit 2  HTTP 400  unsafe_mount
    │   ├── DirtyRepository               exit 2  HTTP 409  dirty_repository
    │   └── ConfigError                   exit 2  HTTP 400  bad_config
    ├── Unauthorized                      exit 2  HTTP 401  unauthorized
    ├── SessionNotFound                   exit 2  HTTP 404  not_found
    ├── StateConflict                     exit 2  HTTP 409  conflict
    │   ├── SessionLocked                 exit 2  HTTP 409  session_locked
    │   └── SessionFinished               exit 2  HTTP 409  session_finished
    ├── EnvironmentProblem                exit 5  HTTP 503  environment
    │   ├── DockerUnavailable             exit 5  HTTP 503  docker_unavailable
    │   ├── ImageMissing                  exit 5  HTTP 503  image_missing
    │   └── CredentialsMissing            exit 5  HTTP 503  credentials_missing
    ├── StoreError                        exit 1  HTTP 500  store
    │   └── StoreFull                     exit 1  HTTP 507  disk_full
    ├── RuntimeFailure                    exit 1  HTTP 502  runtime
    │   └── ContainerNotFound             exit 1  HTTP 502  container_not_found
    ├── PlanInvalid                       exit 1  HTTP 422  plan_invalid
    ├── SessionFailed                     exit 1  HTTP 500  session_failed
    ├── SessionStopped                    exit 3  HTTP 409  session_stopped
    └── SessionPausedExit                 exit 4  HTTP 409  session_paused

Messages say what happened, the bad value, and the fix.
"""

from __future__ import annotations

from typing import ClassVar


class OrchestratorError(Exception):
    """Base of every deliberate error. ``str(err)`` is the user-facing message."""

    exit_code: ClassVar[int] = 1
    http_status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_body(self) -> dict[str, dict[str, str]]:
        """The API error body for this error."""
        return {"error": {"code": self.code, "message": self.message}}


class UsageError(OrchestratorError):
    """Bad arguments, bad input or bad configuration: nothing was started."""

    exit_code = 2
    http_status = 400
    code = "bad_request"


class InvalidIdentifier(UsageError):
    """A session, task or worker id that is not safe as a path segment."""

    code = "invalid_id"


class UnsafeMount(UsageError):
    """A requested mount broke a sandbox rule; the message names the path and the rule."""

    code = "unsafe_mount"

    def __init__(self, path: str, rule: str) -> None:
        super().__init__(f"refused to mount {path!r}: {rule}")
        self.path = path
        self.rule = rule


class DirtyRepository(UsageError):
    """The repository has uncommitted changes and the user did not allow that."""

    http_status = 409
    code = "dirty_repository"


class ConfigError(UsageError):
    """A setting has a value the orchestrator cannot use."""

    code = "bad_config"


class Unauthorized(OrchestratorError):
    """An API request without the right bearer token."""

    exit_code = 2
    http_status = 401
    code = "unauthorized"


class SessionNotFound(OrchestratorError):
    """No session with that id in the workspace."""

    exit_code = 2
    http_status = 404
    code = "not_found"


class StateConflict(OrchestratorError):
    """The session is in a state that does not allow the request."""

    exit_code = 2
    http_status = 409
    code = "conflict"


class SessionLocked(StateConflict):
    """Another live process writes this session."""

    code = "session_locked"


class SessionFinished(StateConflict):
    """The session has finished and cannot be resumed."""

    code = "session_finished"


class EnvironmentProblem(OrchestratorError):
    """Something outside the orchestrator is missing: an engine, an image, a credential."""

    exit_code = 5
    http_status = 503
    code = "environment"


class DockerUnavailable(EnvironmentProblem):
    """No Docker engine answers."""

    code = "docker_unavailable"


class ImageMissing(EnvironmentProblem):
    """An agent image is not built."""

    code = "image_missing"


class CredentialsMissing(EnvironmentProblem):
    """A needed agent has no API key and no login folder."""

    code = "credentials_missing"


class StoreError(OrchestratorError):
    """The event store could not read or write."""

    code = "store"


class StoreFull(StoreError):
    """The disk holding the workspace is full; the log stays readable."""

    http_status = 507
    code = "disk_full"


class RuntimeFailure(OrchestratorError):
    """The container runtime refused or failed a request."""

    http_status = 502
    code = "runtime"


class ContainerNotFound(RuntimeFailure):
    """The container is gone (removed, or never existed): relaunch instead of re-attaching."""

    code = "container_not_found"


class PlanInvalid(OrchestratorError):
    """The planner's answer is not a valid TaskBreakdown."""

    http_status = 422
    code = "plan_invalid"


class SessionFailed(OrchestratorError):
    """A task failed beyond recovery."""

    code = "session_failed"


class SessionStopped(OrchestratorError):
    """Stopped by the review policy or by a person."""

    exit_code = 3
    http_status = 409
    code = "session_stopped"


class SessionPausedExit(OrchestratorError):
    """The session waits for a person and the CLI was told to exit meanwhile."""

    exit_code = 4
    http_status = 409
    code = "session_paused"
