"""Per-agent credentials: which variable a key travels in, login folders copied per worker, redaction."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from orchestrator.config import Settings
from orchestrator.credentials import (
    CLAUDE_OAUTH_VARIABLE,
    KEY_VARIABLES,
    MAX_LOGIN_FILE,
    credentials_for,
    install_login,
    login_copy_dir,
    token_values,
)
from orchestrator.errors import ConfigError, CredentialsMissing
from orchestrator.log import MASK, Redactor
from orchestrator.models.common import AgentName
from orchestrator.paths import SessionPaths

KEY = "canary-key-0123456789abcdef"
ACCESS = "eyJhbGciOiJSUzI1NiJ9.access-token-value"
REFRESH = "rt_refresh-token-value-0123456789"
UID, GID = os.getuid(), os.getgid()


def with_agent(settings: Settings, agent: str, **changes: object) -> Settings:
    return settings.model_copy(update={agent: settings.agent(agent).model_copy(update=changes)})


def codex_login(folder: Path) -> Path:
    """A ~/.codex like the CLI leaves it: auth.json with tokens, plus files that are not credentials."""
    folder.mkdir(parents=True)
    auth = {
        "OPENAI_API_KEY": None,
        "tokens": {"access_token": ACCESS, "refresh_token": REFRESH, "account_id": "acc"},
    }
    (folder / "auth.json").write_text(json.dumps(auth))
    (folder / "config.toml").write_text('model = "gpt-5"\n')
    (folder / "sessions").mkdir()
    (folder / "sessions" / "rollout.jsonl").write_text("{}\n")
    return folder


@pytest.mark.parametrize(
    ("agent", "variable"),
    [("claude", "ANTHROPIC_API_KEY"), ("codex", "OPENAI_API_KEY"), ("gemini", "GEMINI_API_KEY")],
)
def test_an_api_key_travels_as_the_agents_own_secret_variable(
    settings: Settings, agent: str, variable: str
) -> None:
    """The key goes in ``secrets`` under the variable the CLI reads, and nowhere else."""
    found = credentials_for(agent, with_agent(settings, agent, api_key=SecretStr(KEY)), redactor=Redactor())
    assert (found.kind, list(found.secrets), found.env, found.login) == ("api_key", [variable], {}, None)
    assert found.secrets[variable].get_secret_value() == KEY
    assert KEY not in repr(found) + found.describe() + found.model_dump_json()


def test_a_claude_subscription_token_goes_to_the_oauth_variable(settings: Settings) -> None:
    """``claude setup-token`` tokens (sk-ant-oat...) are read from CLAUDE_CODE_OAUTH_TOKEN, not the API key."""
    token = "sk-ant-oat01-abcdefghijklmnop"
    found = credentials_for(
        "claude", with_agent(settings, "claude", api_key=SecretStr(token)), redactor=Redactor()
    )
    assert list(found.secrets) == [CLAUDE_OAUTH_VARIABLE]


def test_the_key_is_registered_for_redaction_before_it_is_returned(settings: Settings) -> None:
    """Anything that later prints the key (a log, an event, a report) shows the mask instead."""
    redactor = Redactor()
    credentials_for("gemini", with_agent(settings, "gemini", api_key=SecretStr(KEY)), redactor=redactor)
    assert redactor(f"the key is {KEY}.") == f"the key is {MASK}."


@pytest.mark.parametrize("agent", ["claude", "codex", "gemini"])
def test_no_key_and_no_login_names_both_settings(settings: Settings, agent: str) -> None:
    """CredentialsMissing says which variable and which login folder to set."""
    with pytest.raises(CredentialsMissing) as caught:
        credentials_for(agent, settings, redactor=Redactor())
    message = str(caught.value)
    assert f"ORCH_{agent.upper()}__API_KEY" in message
    assert f"ORCH_{agent.upper()}__LOGIN_DIR" in message
    assert KEY_VARIABLES[AgentName(agent)] in message
    assert caught.value.exit_code == 5


@pytest.mark.parametrize("key", ["sk-ant-api03 abc", "abc\ndef-ghijkl", "tab\there-key", "nul\x00key-abc"])
def test_a_key_with_whitespace_is_refused_without_echoing_it(settings: Settings, key: str) -> None:
    """A pasted key with a line break cannot be a key: ConfigError naming the setting, not the value."""
    with pytest.raises(ConfigError, match="ORCH_CODEX__API_KEY") as caught:
        credentials_for("codex", with_agent(settings, "codex", api_key=SecretStr(key)), redactor=Redactor())
    assert key not in str(caught.value)


@pytest.mark.parametrize("agent", ["", "Claude", "openai", "../claude"])
def test_an_unknown_agent_is_a_config_error(settings: Settings, agent: str) -> None:
    """Only the three agents have credentials."""
    with pytest.raises(ConfigError, match="unknown agent"):
        credentials_for(agent, settings, redactor=Redactor())


def test_a_login_folder_gives_only_its_credential_files_and_registers_their_tokens(
    settings: Settings, tmp_path: Path
) -> None:
    """From ~/.codex only auth.json is taken; its tokens are masked from then on."""
    folder = codex_login(tmp_path / "user" / ".codex")
    redactor = Redactor()
    found = credentials_for("codex", with_agent(settings, "codex", login_dir=folder), redactor=redactor)
    assert found.kind == "login"
    assert found.secrets == {}
    assert found.login is not None
    assert (found.login.source, found.login.target, found.login.files) == (
        folder.resolve(),
        "/home/agent/.codex",
        ("auth.json",),
    )
    assert redactor(f"{ACCESS} and {REFRESH}") == f"{MASK} and {MASK}"


def test_a_gemini_login_selects_login_auth_and_takes_the_optional_accounts_file(
    settings: Settings, tmp_path: Path
) -> None:
    """Gemini's OAuth files are copied and GOOGLE_GENAI_USE_GCA selects that auth."""
    folder = tmp_path / ".gemini"
    folder.mkdir()
    (folder / "oauth_creds.json").write_text(json.dumps({"refresh_token": REFRESH}))
    (folder / "google_accounts.json").write_text(json.dumps({"active": "someone@example.com"}))
    found = credentials_for("gemini", with_agent(settings, "gemini", login_dir=folder), redactor=Redactor())
    assert found.env == {"GOOGLE_GENAI_USE_GCA": "true"}
    assert found.login is not None
    assert found.login.files == ("oauth_creds.json", "google_accounts.json")


def test_an_api_key_wins_over_a_login_folder(settings: Settings, tmp_path: Path) -> None:
    """With both set the key is used (headless runs need no login state)."""
    both = with_agent(settings, "codex", api_key=SecretStr(KEY), login_dir=codex_login(tmp_path / ".codex"))
    assert credentials_for("codex", both, redactor=Redactor()).kind == "api_key"


def test_a_missing_login_folder_or_file_is_credentials_missing(settings: Settings, tmp_path: Path) -> None:
    """A folder that is not there, or a folder without the credential file, names what to fix."""
    with pytest.raises(CredentialsMissing, match="is not a folder"):
        credentials_for(
            "claude", with_agent(settings, "claude", login_dir=tmp_path / "nope"), redactor=Redactor()
        )
    (tmp_path / ".claude").mkdir()
    with pytest.raises(CredentialsMissing, match=r"has no \.credentials\.json"):
        credentials_for(
            "claude", with_agent(settings, "claude", login_dir=tmp_path / ".claude"), redactor=Redactor()
        )


def test_a_symlinked_or_huge_credential_file_is_refused(settings: Settings, tmp_path: Path) -> None:
    """A symlink could point anywhere (never followed); a 1 MiB+ file is no credential."""
    folder = tmp_path / ".codex"
    folder.mkdir()
    (tmp_path / "elsewhere").write_text("{}")
    (folder / "auth.json").symlink_to(tmp_path / "elsewhere")
    conf = with_agent(settings, "codex", login_dir=folder)
    with pytest.raises(ConfigError, match="not a symlink"):
        credentials_for("codex", conf, redactor=Redactor())
    (folder / "auth.json").unlink()
    (folder / "auth.json").write_bytes(b" " * (MAX_LOGIN_FILE + 1))
    with pytest.raises(ConfigError, match="over 1 MiB"):
        credentials_for("codex", conf, redactor=Redactor())


def test_each_worker_gets_its_own_private_copy(settings: Settings, tmp_path: Path) -> None:
    """Two parallel Codex workers: two folders, 0700/0600, same content, neither is the user's."""
    user = codex_login(tmp_path / "user" / ".codex")
    found = credentials_for("codex", with_agent(settings, "codex", login_dir=user), redactor=Redactor())
    paths = SessionPaths.of(tmp_path / "workspace", "s0000001abc")
    copies = []
    for worker in ("codex-t1", "codex-t2"):
        dest = install_login(found, login_copy_dir(paths, worker, found), uid=UID, gid=GID)
        assert dest == paths.home(worker) / ".codex"
        copies.append(dest)
    first, second = copies
    assert first != second
    assert sorted(p.name for p in first.iterdir()) == ["auth.json"]
    assert (
        (first / "auth.json").read_bytes()
        == (user / "auth.json").read_bytes()
        == (second / "auth.json").read_bytes()
    )
    assert stat.S_IMODE(first.stat().st_mode) == 0o700
    assert stat.S_IMODE((first / "auth.json").stat().st_mode) == 0o600
    (first / "auth.json").write_text("refreshed by worker 1")
    assert (second / "auth.json").read_bytes() == (user / "auth.json").read_bytes()


def test_a_second_attempt_keeps_the_workers_own_copy(settings: Settings, tmp_path: Path) -> None:
    """Installing again (a restart) does not overwrite what the worker's CLI refreshed."""
    user = codex_login(tmp_path / ".codex")
    found = credentials_for("codex", with_agent(settings, "codex", login_dir=user), redactor=Redactor())
    dest = tmp_path / "homes" / "codex-t1" / ".codex"
    install_login(found, dest, uid=UID, gid=GID)
    (dest / "auth.json").write_text("refreshed")
    install_login(found, dest, uid=UID, gid=GID)
    assert (dest / "auth.json").read_text() == "refreshed"


def test_a_key_needs_no_copy(settings: Settings, tmp_path: Path) -> None:
    """With an API key there is nothing to place in the home."""
    found = credentials_for(
        "claude", with_agent(settings, "claude", api_key=SecretStr(KEY)), redactor=Redactor()
    )
    assert install_login(found, tmp_path / "dest", uid=UID, gid=GID) is None
    assert not (tmp_path / "dest").exists()


def test_without_root_the_copy_cannot_go_to_another_uid(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not root, and the container runs as another uid: it could not read the copy, so ConfigError."""
    found = credentials_for(
        "codex",
        with_agent(settings, "codex", login_dir=codex_login(tmp_path / ".codex")),
        redactor=Redactor(),
    )
    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    with pytest.raises(ConfigError, match="ORCH_UID"):
        install_login(found, tmp_path / "dest", uid=UID + 1, gid=GID)
    assert not (tmp_path / "dest").exists()


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
    )
)
def test_token_values_finds_every_long_string_and_never_raises(value: object) -> None:
    """For all JSON values: every string of 16+ non-space characters is found, nothing shorter."""
    found = token_values(json.dumps(value).encode())
    assert all(len(item) >= 16 and not any(c.isspace() for c in item) for item in found)
    if isinstance(value, str) and len(value) >= 16 and not any(c.isspace() for c in value):
        assert found == [value]


@pytest.mark.parametrize("garbage", [b"", b"\xff\xfe", b"not json", b"[1, 2", b'"' + b"x" * 40 + b'"'])
def test_token_values_of_garbage_is_a_list(garbage: bytes) -> None:
    """A credential file that is not JSON yields no tokens (or the one string it is), never an error."""
    assert token_values(garbage) in ([], ["x" * 40])
