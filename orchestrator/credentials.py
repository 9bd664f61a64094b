"""Per-agent credentials: an API key passed as a secret env variable, or a login folder copied per worker.

``credentials_for(agent, settings)`` decides, once per session and agent, what that agent's
containers get, and registers every secret value with the redactor before anything can print it:

- an API key (``ORCH_<AGENT>__API_KEY``) becomes ``Credentials.secrets`` (``ANTHROPIC_API_KEY``,
  ``OPENAI_API_KEY``, ``GEMINI_API_KEY``; a Claude subscription token ``sk-ant-oat...`` goes to
  ``CLAUDE_CODE_OAUTH_TOKEN``). Secrets travel only in ``ContainerSpec.secrets``: never in argv,
  labels, events, logs, SSE or reports (the redactor masks them wherever they are echoed);
- otherwise a login folder (``ORCH_<AGENT>__LOGIN_DIR``: ``~/.claude``, ``~/.codex``, ``~/.gemini``)
  becomes ``Credentials.login``: only the CLI's credential files are taken from it.

``install_login(credentials, dest, uid=, gid=)`` copies those files into a folder of one worker
(``login_copy_dir(paths, worker, credentials)``, under the session's ``homes/<worker>/``), owned by
the container's uid, mode 0700/0600. The worker launch mounts that copy at ``login.target``, the
CLI's config folder inside the container's tmpfs home (the same folder the adapters declare in
``CommandSpec.state_dirs``, so it keeps the CLI's session between attempts). The user's own folder
is never mounted, and two workers never share a copy: parallel Codex workers would otherwise
write one ``auth.json`` and one session store at once.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Final, Literal

from pydantic import Field, SecretStr

from orchestrator.config import Settings
from orchestrator.egress_rules import agent_name
from orchestrator.errors import ConfigError, CredentialsMissing
from orchestrator.log import REDACTOR, Redactor, get_logger
from orchestrator.models.common import AgentName, Model
from orchestrator.paths import SessionPaths

log = get_logger(__name__)

AGENT_HOME: Final = "/home/agent"  # HOME of uid 1000 in the agent images (images/base/recipe.toml)
KEY_VARIABLES: Final[dict[AgentName, str]] = {
    AgentName.CLAUDE: "ANTHROPIC_API_KEY",
    AgentName.CODEX: "OPENAI_API_KEY",
    AgentName.GEMINI: "GEMINI_API_KEY",
}
CLAUDE_OAUTH_VARIABLE: Final = "CLAUDE_CODE_OAUTH_TOKEN"
CLAUDE_OAUTH_PREFIX: Final = "sk-ant-oat"
MAX_LOGIN_FILE: Final = 1024 * 1024
MIN_TOKEN: Final = 16


class LoginLayout(Model):
    """Where a CLI keeps its login: the folder under HOME and the files that hold the credential."""

    folder: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict, description="plain env that selects login auth")


LOGINS: Final[dict[AgentName, LoginLayout]] = {
    AgentName.CLAUDE: LoginLayout(folder=".claude", required=(".credentials.json",)),
    AgentName.CODEX: LoginLayout(folder=".codex", required=("auth.json",)),
    AgentName.GEMINI: LoginLayout(
        folder=".gemini",
        required=("oauth_creds.json",),
        optional=("google_accounts.json",),
        env={"GOOGLE_GENAI_USE_GCA": "true"},
    ),
}


class LoginFolder(Model):
    """A login folder to copy: ``files`` (relative names) from ``source`` to ``target`` in the container."""

    source: Path
    target: str
    files: tuple[str, ...]


class Credentials(Model):
    """What one agent's containers get; see the module docstring. ``repr`` never shows a secret."""

    agent: AgentName
    kind: Literal["api_key", "login"]
    secrets: dict[str, SecretStr] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    login: LoginFolder | None = None

    def describe(self) -> str:
        """Where the credential comes from, for logs and errors (names only, never a value)."""
        if self.login is not None:
            return f"{self.agent} login folder {self.login.source} ({', '.join(self.login.files)})"
        return f"{self.agent} API key from ORCH_{self.agent.upper()}__API_KEY as {', '.join(self.secrets)}"


def _missing(agent: AgentName) -> CredentialsMissing:
    prefix = f"ORCH_{agent.upper()}__"
    layout = LOGINS[agent]
    return CredentialsMissing(
        f"{agent} has no credential: set {prefix}API_KEY (passed to it as {KEY_VARIABLES[agent]}) or "
        f"{prefix}LOGIN_DIR (a login folder such as ~/{layout.folder} holding {', '.join(layout.required)})"
    )


def _key_credentials(agent: AgentName, key: str) -> Credentials:
    if any(c.isspace() for c in key) or "\x00" in key:
        raise ConfigError(
            f"ORCH_{agent.upper()}__API_KEY contains whitespace or a NUL byte, which no API key has: "
            "set it again without quotes or line breaks"
        )
    variable = KEY_VARIABLES[agent]
    if agent == AgentName.CLAUDE and key.startswith(CLAUDE_OAUTH_PREFIX):
        variable = CLAUDE_OAUTH_VARIABLE
    return Credentials(agent=agent, kind="api_key", secrets={variable: SecretStr(key)})


def _read_login_file(path: Path, agent: AgentName) -> bytes:
    """The bytes of one credential file: a regular file (not a symlink), at most 1 MiB."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CredentialsMissing(
            f"{agent} login folder {path.parent} has no {path.name}: log in with the {agent} CLI "
            f"on this machine first, or set ORCH_{agent.upper()}__API_KEY instead"
        ) from None
    except OSError as err:
        raise ConfigError(
            f"{agent} login file {path} cannot be read ({err.strerror}): it must be a regular file "
            f"readable by this user, not a symlink; fix ORCH_{agent.upper()}__LOGIN_DIR"
        ) from err
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise ConfigError(
                f"{agent} login file {path} is not a regular file; fix ORCH_{agent.upper()}__LOGIN_DIR"
            )
        data = handle.read(MAX_LOGIN_FILE + 1)
    if len(data) > MAX_LOGIN_FILE:
        raise ConfigError(
            f"{agent} login file {path} is over 1 MiB, which no credential file is; check the folder"
        )
    return data


def token_values(data: bytes) -> list[str]:
    """Every string in a JSON credential file that could be a token (no spaces, >= 16 characters)."""
    try:
        parsed = json.loads(data)
    except ValueError:
        return []
    found: list[str] = []
    pending = [parsed]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str) and len(item) >= MIN_TOKEN and not any(c.isspace() for c in item):
            found.append(item)
    return found


def _login_credentials(agent: AgentName, folder: Path, redactor: Redactor) -> Credentials:
    layout = LOGINS[agent]
    source = folder.expanduser()
    if not source.is_dir():
        raise CredentialsMissing(
            f"{agent} login folder {str(folder)!r} is not a folder: set ORCH_{agent.upper()}__LOGIN_DIR "
            f"to the folder the {agent} CLI logged in to (usually ~/{layout.folder}) or set ORCH_{agent.upper()}__API_KEY"
        )
    source = source.resolve()
    files = list(layout.required)
    for name in layout.required:
        redactor.register(*token_values(_read_login_file(source / name, agent)))
    for name in layout.optional:
        if (source / name).is_file():
            redactor.register(*token_values(_read_login_file(source / name, agent)))
            files.append(name)
    login = LoginFolder(source=source, target=f"{AGENT_HOME}/{layout.folder}", files=tuple(files))
    return Credentials(agent=agent, kind="login", env=dict(layout.env), login=login)


def credentials_for(
    agent: AgentName | str, settings: Settings, *, redactor: Redactor = REDACTOR
) -> Credentials:
    """The credential of ``agent`` under ``settings``: its API key if set, else its login folder.

    Every secret value (the key, the tokens in the login files) is registered with ``redactor``
    before this returns. Raises ``CredentialsMissing`` naming the variable and the login folder to
    set when there is neither (or the folder lacks its credential file), ``ConfigError`` for a
    key or a login file that cannot be right, and ``ConfigError`` for an unknown agent.
    """
    name = agent_name(agent)
    conf = settings.agent(name)
    key = conf.api_key.get_secret_value() if conf.api_key is not None else ""
    if key:
        redactor.register(key)
        found = _key_credentials(name, key)
    elif conf.login_dir is not None:
        found = _login_credentials(name, conf.login_dir, redactor)
    else:
        raise _missing(name)
    log.info("credentials_chosen", agent=str(name), source=found.describe())
    return found


def login_copy_dir(paths: SessionPaths, worker: str, credentials: Credentials) -> Path:
    """The host folder holding ``worker``'s own copy of the login: ``homes/<worker>/<.folder>``."""
    return paths.home(worker) / LOGINS[credentials.agent].folder


def install_login(credentials: Credentials, dest: Path, *, uid: int, gid: int) -> Path | None:
    """Copy the login files into ``dest`` (one worker's folder), owned by ``uid:gid``; None for a key.

    A file already in ``dest`` is kept: it is this worker's own copy, which its CLI may have
    refreshed during an earlier attempt. Files are created 0600 without following symlinks, the
    folder 0700. As root the copy is given to ``uid:gid``; as another user it must already be
    that user's (``ConfigError`` otherwise, since the container could not read it).
    """
    login = credentials.login
    if login is None:
        return None
    as_root = os.geteuid() == 0
    if not as_root and (uid, gid) != (os.getuid(), os.getgid()):
        raise ConfigError(
            f"cannot give {credentials.agent}'s login copy to uid {uid}:{gid} without root: run the "
            "orchestrator as the user that owns the repository, or set ORCH_UID/ORCH_GID to this user"
        )
    dest.mkdir(parents=True, exist_ok=True)
    dest.chmod(0o700)
    for name in login.files:
        target = dest / name
        if target.exists() or target.is_symlink():
            continue
        data = _read_login_file(login.source / name, credentials.agent)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        if as_root:
            os.chown(target, uid, gid, follow_symlinks=False)
    if as_root:
        os.chown(dest, uid, gid)
    log.info("login_copied", agent=str(credentials.agent), dest=str(dest), files=list(login.files))
    return dest
