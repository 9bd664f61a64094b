"""``build_command`` of each adapter: the exact headless argv per permission rung, and where credentials go."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError

from orchestrator.agents import ADAPTERS, CommandSpec, get_adapter
from orchestrator.config import AgentSettings
from orchestrator.errors import ConfigError, CredentialsMissing, InvalidIdentifier, UsageError
from orchestrator.models.common import AgentName

KEY = "sk-test-0123456789abcdef"
BASE = "http://modelserver:8080"
PROMPT = "make hello.txt"
DISALLOWED = [
    "WebFetch", "WebSearch", "Bash(git push:*)", "Bash(curl:*)", "Bash(wget:*)", "Bash(npm publish:*)",
    "Bash(yarn publish:*)", "Bash(pnpm publish:*)", "Bash(twine upload:*)", "Bash(cargo publish:*)",
    "Bash(gem push:*)", "Bash(docker push:*)", "Bash(gh release create:*)",
]  # fmt: skip
CLAUDE_HEAD = ["claude", "-p", PROMPT, "--output-format", "stream-json", "--verbose"]
CODEX_HEAD = ["codex", "exec", "--json", "--skip-git-repo-check"]
GEMINI_HEAD = ["gemini", "-p", PROMPT, "-o", "stream-json", "--skip-trust"]
GEMINI_TAIL = ["-m", "gemini-2.5-pro", "--policy", "/etc/orchestrator/gemini/policy.toml"]


def settings(**changes: object) -> AgentSettings:
    return AgentSettings(base_url=BASE, api_key=SecretStr(KEY)).model_copy(update=changes)


@pytest.mark.parametrize(
    ("agent", "rung", "argv", "flags"),
    [
        ("claude", 0, [*CLAUDE_HEAD, "--disallowedTools", *DISALLOWED], []),
        ("claude", 1, [*CLAUDE_HEAD, "--permission-mode", "acceptEdits", "--disallowedTools", *DISALLOWED],
         ["--permission-mode", "acceptEdits"]),
        ("claude", 2, [*CLAUDE_HEAD, "--permission-mode", "bypassPermissions", "--disallowedTools", *DISALLOWED],
         ["--permission-mode", "bypassPermissions"]),
        ("codex", 0, [*CODEX_HEAD, "--sandbox", "read-only", PROMPT], ["--sandbox", "read-only"]),
        ("codex", 1, [*CODEX_HEAD, "--sandbox", "workspace-write", PROMPT], ["--sandbox", "workspace-write"]),
        ("codex", 2, [*CODEX_HEAD, "--dangerously-bypass-approvals-and-sandbox", PROMPT],
         ["--dangerously-bypass-approvals-and-sandbox"]),
        ("gemini", 0, [*GEMINI_HEAD, *GEMINI_TAIL], []),
        ("gemini", 1, [*GEMINI_HEAD, "--approval-mode", "auto_edit", *GEMINI_TAIL], ["--approval-mode", "auto_edit"]),
        ("gemini", 2, [*GEMINI_HEAD, "--approval-mode", "yolo", *GEMINI_TAIL], ["--approval-mode", "yolo"]),
    ],
)  # fmt: skip
def test_argv_per_rung(agent: str, rung: int, argv: list[str], flags: list[str]) -> None:
    """Each rung of the ladder (POLICIES.md §2) is exactly these arguments; ``flags`` are the rung's own."""
    spec = get_adapter(agent).build_command(PROMPT, rung, settings=settings())
    assert (argv, flags, rung) == (spec.argv, spec.flags, spec.rung)


@pytest.mark.parametrize(
    ("agent", "variable"),
    [("claude", "ANTHROPIC_API_KEY"), ("codex", "OPENAI_API_KEY"), ("gemini", "GEMINI_API_KEY")],
)
@pytest.mark.parametrize("rung", [0, 1, 2])
def test_the_key_travels_only_as_a_secret(agent: str, variable: str, rung: int) -> None:
    """The API key is in the secret environment under the CLI's variable, never in argv, env or a file."""
    spec = get_adapter(agent).build_command(PROMPT, rung, settings=settings())
    exposed = [*spec.argv, *spec.env.values(), *(c.decode() for c in spec.files.values())]
    assert ({variable: KEY}, []) == (
        {k: v.get_secret_value() for k, v in spec.secrets.items()},
        [text for text in exposed if KEY in text],
    )
    assert spec.environment[variable] == KEY


@pytest.mark.parametrize(
    ("agent", "env"),
    [
        ("claude", {"ANTHROPIC_BASE_URL": BASE, "DISABLE_AUTOUPDATER": "1", "DISABLE_TELEMETRY": "1",
                    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_ERROR_REPORTING": "1",
                    "CLAUDE_CODE_MAX_RETRIES": "2", "TMPDIR": "/tmp"}),
        ("codex", {"TMPDIR": "/tmp"}),
        ("gemini", {"GOOGLE_GEMINI_BASE_URL": BASE, "GEMINI_CLI_NO_RELAUNCH": "true"}),
    ],
)  # fmt: skip
def test_quiet_environment(agent: str, env: dict[str, str]) -> None:
    """Base URL, no update checks or telemetry, few own retries, a writable TMPDIR."""
    assert env == get_adapter(agent).build_command(PROMPT, 0, settings=settings()).env


@pytest.mark.parametrize(
    ("agent", "writable", "state", "files"),
    [
        ("claude", ["/tmp"], ["/home/agent/.claude"], []),
        ("codex", ["/tmp"], ["/home/agent/.codex"], ["/etc/codex/config.toml"]),
        ("gemini", ["/tmp"], ["/home/agent/.gemini"],
         ["/home/agent/.gemini/settings.json", "/etc/orchestrator/gemini/policy.toml"]),
    ],
)  # fmt: skip
def test_paths_the_cli_needs(agent: str, writable: list[str], state: list[str], files: list[str]) -> None:
    """Writable dirs, dirs kept between attempts (the CLI's sessions, for resume), and config files."""
    spec = get_adapter(agent).build_command(PROMPT, 0, settings=settings())
    assert (writable, state, files) == (spec.writable_dirs, spec.state_dirs, list(spec.files))


def test_codex_transcript_is_its_rollout() -> None:
    """Codex's session log (the only trace of sandbox denials on a host) lies under its home."""
    spec = get_adapter("codex").build_command(PROMPT, 0, settings=settings())
    assert spec.transcript_glob == "/home/agent/.codex/sessions/*/*/*/rollout-*.jsonl"


@pytest.mark.parametrize(
    ("agent", "argv"),
    [
        ("claude", [*CLAUDE_HEAD, "--permission-mode", "acceptEdits", "--resume", "0fcb6490-f29e-499a",
                    "--disallowedTools", *DISALLOWED]),
        ("codex", [*CODEX_HEAD, "--sandbox", "workspace-write", "resume", "0fcb6490-f29e-499a", PROMPT]),
        ("gemini", [*GEMINI_HEAD, "--approval-mode", "auto_edit", "-m", "gemini-2.5-pro", "--resume",
                    "0fcb6490-f29e-499a", "--policy", "/etc/orchestrator/gemini/policy.toml"]),
    ],
)  # fmt: skip
def test_resume(agent: str, argv: list[str]) -> None:
    """A restart continues the CLI's own session (Codex: the sandbox flag stays an ``exec`` option)."""
    spec = get_adapter(agent).build_command(PROMPT, 1, settings=settings(), resume_id="0fcb6490-f29e-499a")
    assert argv == spec.argv


@pytest.mark.parametrize(
    ("agent", "tail"),
    [
        ("claude", ["--disallowedTools", *DISALLOWED, "--add-dir", "/repo/docs", "/data"]),
        ("codex", ["--sandbox", "read-only", PROMPT]),  # Codex reads everywhere; --add-dir would grant writes
        (
            "gemini",
            ["--include-directories", "/repo/docs,/data", "--policy", "/etc/orchestrator/gemini/policy.toml"],
        ),
    ],
)
def test_extra_read_only_dirs(agent: str, tail: list[str]) -> None:
    """Extra directories the task may read."""
    spec = get_adapter(agent).build_command(
        PROMPT, 0, settings=settings(), extra_ro_dirs=["/repo/docs", "/data"]
    )
    assert tail == spec.argv[-len(tail) :]


@pytest.mark.parametrize(
    ("agent", "pair"), [("claude", ["--model", "m-1"]), ("codex", ["-m", "m-1"]), ("gemini", ["-m", "m-1"])]
)
def test_model_override(agent: str, pair: list[str]) -> None:
    """``model`` wins over ``settings.model`` and appears once."""
    argv = get_adapter(agent).build_command(PROMPT, 0, settings=settings(model="m-0"), model="m-1").argv
    at = argv.index(pair[0])
    assert (pair, 1) == (argv[at : at + 2], argv.count(pair[0]))


@pytest.mark.parametrize("agent", ["claude", "codex", "gemini"])
def test_rung_above_the_ceiling_is_refused(agent: str) -> None:
    """``max_rung`` is a ceiling: the adapter refuses to build a wider rung, naming the setting."""
    with pytest.raises(ConfigError, match=f"ORCH_{agent.upper()}__MAX_RUNG"):
        get_adapter(agent).build_command(PROMPT, 2, settings=settings(max_rung=1))


@pytest.mark.parametrize("agent", ["claude", "codex", "gemini"])
@pytest.mark.parametrize("rung", [-1, 3])
def test_rung_outside_the_ladder_is_refused(agent: str, rung: int) -> None:
    """Rungs are 0..2."""
    with pytest.raises(UsageError, match=r"rungs are 0\.\.2"):
        get_adapter(agent).build_command(PROMPT, rung, settings=settings())


@pytest.mark.parametrize("agent", ["claude", "codex", "gemini"])
@pytest.mark.parametrize("resume_id", ["--dangerously-skip-permissions", "a b", "", "x/../y", "é"])
def test_a_resume_id_cannot_smuggle_an_option(agent: str, resume_id: str) -> None:
    """Resume ids come from CLI output: anything but a plain id is refused."""
    with pytest.raises(InvalidIdentifier):
        get_adapter(agent).build_command(PROMPT, 0, settings=settings(), resume_id=resume_id)


@pytest.mark.parametrize("agent", ["claude", "codex", "gemini"])
@pytest.mark.parametrize("path", ["relative/dir", "/repo/../etc", "/a\x00b", "-rf"])
def test_bad_extra_dirs_are_refused(agent: str, path: str) -> None:
    """Extra directories are absolute container paths without '..' or NUL."""
    with pytest.raises(UsageError, match="extra directory"):
        get_adapter(agent).build_command(PROMPT, 0, settings=settings(), extra_ro_dirs=[path])


def test_gemini_dir_with_a_comma_is_refused() -> None:
    """Gemini takes its directories comma-separated, so a comma inside one is refused."""
    with pytest.raises(UsageError, match="','"):
        get_adapter("gemini").build_command(PROMPT, 0, settings=settings(), extra_ro_dirs=["/a,b"])


@pytest.mark.parametrize("agent", ["claude", "codex", "gemini"])
def test_bad_model_name_is_refused(agent: str) -> None:
    """A model name is one plain token; the error names the setting."""
    with pytest.raises(ConfigError, match=f"ORCH_{agent.upper()}__MODEL"):
        get_adapter(agent).build_command(PROMPT, 0, settings=settings(model="--yolo x"))


@pytest.mark.parametrize("agent", ["claude", "codex", "gemini"])
def test_no_credential_is_refused(agent: str) -> None:
    """Neither a key nor a login folder: the error names both settings."""
    with pytest.raises(
        CredentialsMissing, match=f"ORCH_{agent.upper()}__API_KEY.*ORCH_{agent.upper()}__LOGIN_DIR"
    ):
        get_adapter(agent).build_command(PROMPT, 0, settings=AgentSettings())


@pytest.mark.parametrize("agent", ["claude", "codex", "gemini"])
def test_login_folder_instead_of_a_key(agent: str) -> None:
    """With a login folder and no key no secret is sent; the folder's target is the CLI's home dir."""
    spec = get_adapter(agent).build_command(PROMPT, 0, settings=AgentSettings(login_dir=Path("/home/me/.x")))
    assert ({}, f"/home/agent/.{agent}") == (spec.secrets, spec.login_dir)


def test_explicit_key_wins_over_settings() -> None:
    """``api_key`` overrides ``settings.api_key``."""
    spec = get_adapter("claude").build_command(PROMPT, 0, settings=settings(), api_key="sk-other-0123456789")
    assert spec.secrets["ANTHROPIC_API_KEY"].get_secret_value() == "sk-other-0123456789"


@pytest.mark.parametrize("agent", ["claude", "codex", "gemini"])
def test_a_prompt_that_looks_like_an_option_stays_a_prompt(agent: str) -> None:
    """A prompt starting with '-' gets a leading space, so no CLI parses it as an option."""
    assert (
        " -rf everything" in get_adapter(agent).build_command("-rf everything", 0, settings=settings()).argv
    )


@pytest.mark.parametrize("agent", ["claude", "codex", "gemini"])
@pytest.mark.parametrize("prompt", ["", "   ", "a\x00b"])
def test_unusable_prompts_are_refused(agent: str, prompt: str) -> None:
    """An empty prompt or one with a NUL byte (which argv cannot carry) is refused."""
    with pytest.raises(UsageError, match="prompt"):
        get_adapter(agent).build_command(prompt, 0, settings=settings())


def test_codex_config_toml() -> None:
    """Codex's system config: our provider at the base URL, key from the env, few retries, no phoning home."""
    spec = get_adapter("codex").build_command(PROMPT, 0, settings=settings(base_url="http://ms:8080/v1"))
    config = tomllib.loads(spec.files["/etc/codex/config.toml"].decode())
    assert config == {
        "model_provider": "orchestrator",
        "check_for_update_on_startup": False,
        "analytics": {"enabled": False},
        "features": {"plugins": False, "remote_plugin": False},
        "model_providers": {
            "orchestrator": {
                "name": "orchestrator",
                "base_url": "http://ms:8080/v1",
                "env_key": "OPENAI_API_KEY",
                "wire_api": "responses",
                "request_max_retries": 1,
                "stream_max_retries": 1,
                "supports_websockets": False,
            }
        },
    }


def test_codex_without_base_url_uses_the_public_api() -> None:
    """No base URL configured: the provider points at api.openai.com."""
    spec = get_adapter("codex").build_command(PROMPT, 0, settings=settings(base_url=None))
    config = tomllib.loads(spec.files["/etc/codex/config.toml"].decode())
    assert config["model_providers"]["orchestrator"]["base_url"] == "https://api.openai.com/v1"


def test_gemini_settings_file() -> None:
    """API-key auth (a base URL alone selects the refused gateway auth), quiet, two attempts."""
    spec = get_adapter("gemini").build_command(PROMPT, 0, settings=settings())
    assert json.loads(spec.files["/home/agent/.gemini/settings.json"]) == {
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False, "maxAttempts": 2},
        "privacy": {"usageStatisticsEnabled": False},
        "telemetry": {"enabled": False},
    }


def test_gemini_policy_denies_pushing_fetching_publishing() -> None:
    """The policy file denies, on every rung, the commands and tools the sandbox rules forbid."""
    spec = get_adapter("gemini").build_command(PROMPT, 2, settings=settings())
    rules = tomllib.loads(spec.files["/etc/orchestrator/gemini/policy.toml"].decode())["rule"]
    assert [(r["toolName"], r["decision"]) for r in rules] == [
        ("run_shell_command", "deny"),
        ("web_fetch", "deny"),
    ]
    assert {"git push", "curl", "npm publish"} <= set(rules[0]["commandPrefix"])


SCHEMA = {"type": "object", "required": ["goal"], "properties": {"goal": {"type": "string"}}}


def test_claude_structured_command() -> None:
    """Claude: rung 0 with ``--json-schema`` (compact JSON), still stream-json."""
    spec = get_adapter("claude").build_structured_command("plan it", SCHEMA, settings=settings())
    at = spec.argv.index("--json-schema")
    assert ([*CLAUDE_HEAD[:2], "plan it"], SCHEMA, []) == (
        spec.argv[:3],
        json.loads(spec.argv[at + 1]),
        spec.flags,
    )


def test_codex_structured_command() -> None:
    """Codex: rung 0 with ``--output-schema`` pointing at the schema file it declares."""
    spec = get_adapter("codex").build_structured_command("plan it", SCHEMA, settings=settings())
    path = "/etc/orchestrator/codex/output-schema.json"
    assert [*CODEX_HEAD, "--sandbox", "read-only", "--output-schema", path, "plan it"] == spec.argv
    assert json.loads(spec.files[path]) == SCHEMA


def test_gemini_structured_command() -> None:
    """Gemini has no schema option: the schema goes into the prompt, rung 0."""
    spec = get_adapter("gemini").build_structured_command("plan it", SCHEMA, settings=settings())
    prompt = spec.argv[2]
    assert (
        prompt.startswith("plan it"),
        prompt.endswith(json.dumps(SCHEMA, separators=(",", ":"))),
        spec.flags,
    ) == (True, True, [])


def test_a_spec_refuses_a_credential_in_the_open() -> None:
    """A CommandSpec cannot be built with a secret value in argv: it belongs in ``secrets``."""
    with pytest.raises(ValidationError, match="belongs in secrets"):
        CommandSpec(agent=AgentName.CLAUDE, rung=0, argv=["claude", KEY], secrets={"K": SecretStr(KEY)})


def test_get_adapter() -> None:
    """One adapter per agent, by name; anything else is a usage error naming the agents."""
    assert (
        {a: a for a in AgentName}
        == {a: get_adapter(a.value).name for a in AgentName}
        == {a: ADAPTERS[a].name for a in AgentName}
    )
    with pytest.raises(UsageError, match="claude, codex, gemini"):
        get_adapter("gpt")


@given(prompt=st.text(min_size=1).filter(lambda p: "\x00" not in p and p.strip()))
def test_any_prompt_is_one_argv_item_and_never_leaks_the_key(prompt: str) -> None:
    """Whatever the prompt, it is exactly one argv item (maybe with a leading space) and the key stays secret."""
    at = {AgentName.CLAUDE: 2, AgentName.CODEX: -1, AgentName.GEMINI: 2}
    for name, adapter in ADAPTERS.items():
        argv = adapter.build_command(prompt, 1, settings=settings()).argv
        assert argv[at[name]] in (prompt, f" {prompt}")
        assert all(KEY not in arg for arg in argv)
