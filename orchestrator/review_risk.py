"""Risky tool calls (POLICIES.md §3, ``risky_action``): pure pattern matching on a ``ToolCall``.

A worker's tool call is risky when it pushes, pipes a download into a shell, deletes outside its
worktree, or touches CI config, Dockerfiles, ``.env``/credential files or git's own config and
hooks. The coordinator pauses the worker's container on a risky call until the review decides.

The three CLIs shape tool input differently (Claude ``Bash{command}``/``Write{file_path}``, Gemini
``run_shell_command{command}``/``write_file{file_path}``, Codex ``command_execution{command}``
wrapped in ``/bin/bash -lc '…'`` and ``file_change{changes:[{path, kind}]}``, ``apply_patch``
text). ``tool_texts`` walks any input and sorts its strings into commands, paths, patches and
deletions, so one rule set covers all three.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from pydantic import Field, field_validator

from orchestrator.models.common import Model
from orchestrator.models.events import ToolCall

COMMAND_KEYS = frozenset({"command", "cmd", "script", "commands"})
PATH_KEYS = frozenset(
    {"file_path", "path", "paths", "notebook_path", "absolute_path", "dir_path", "target", "destination"}
)
PATCH_KEYS = frozenset({"patch", "diff", "input"})
_MAX_DEPTH = 6
_SHELLS = frozenset({"sh", "bash", "zsh", "dash", "ksh"})
_PREFIXES = frozenset({"sudo", "env", "command", "nohup", "exec", "time", "nice", "xargs"})
_DELETERS = frozenset({"rm", "rmdir", "shred", "unlink"})
_SEPARATORS = frozenset({";", "&&", "||", "|", "&", "(", ")", "\n"})
_PATCH_PATH = re.compile(
    r"^(?:\*\*\* (?:Add|Update|Delete) File: |\*\*\* Move to: |\+\+\+ (?:b/)?|--- (?:a/)?)(\S.*)$", re.M
)
_REDIRECT = re.compile(r"\d*(?:>>?|<|&>)")
_PATCH_DELETE = re.compile(r"^\*\*\* Delete File: (\S.*)$", re.M)
# What a file-ish pattern may be preceded by: start, a separator, a slash, a quote or a redirection.
_B = r"(?:^|[\s/'\"=>:])"

Target = Literal["command", "any"]


class RiskyPattern(Model):
    """A named regular expression; ``command`` patterns see shell commands only, ``any`` also paths."""

    name: str = Field(min_length=1)
    regex: str = Field(min_length=1)
    target: Target = "any"

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression ({exc}); escape special characters") from exc
        return value


DEFAULT_RISKY_PATTERNS: tuple[RiskyPattern, ...] = (
    RiskyPattern(
        name="git_push",
        regex=(
            r"\bgit(?:\s+(?:-[Cc]\s+\S+|--[\w-]+(?:=\S+)?|-\w))*\s+push\b"
            r"|\bgh\s+(?:pr\s+(?:create|merge)|release\s+create|repo\s+create)\b"
        ),
        target="command",
    ),
    RiskyPattern(
        name="publish",
        regex=r"\b(?:npm|yarn|pnpm|cargo|gem|poetry)\s+publish\b|\btwine\s+upload\b|\bdocker\s+push\b",
        target="command",
    ),
    RiskyPattern(
        name="pipe_to_shell",
        regex=(
            r"\b(?:curl|wget)\b[^|\n]*\|\s*(?:sudo\s+)?(?:env\s+)?(?:/\S*/)?"
            r"(?:(?:ba|z|da|k|fi)?sh\b|(?:python[\d.]*|perl|ruby|node)(?:\s+-)?\s*(?:$|[;&|)'\"]))"
            r"|\b(?:ba|z|da|k)?sh\s+(?:-\w+\s+)*[\"']?(?:<\(|\$\()\s*(?:curl|wget)\b"
            r"|(?:^|[\s;&|])(?:source|eval|\.)\s+[\"']?(?:<\(|\$\()\s*(?:curl|wget)\b"
        ),
        target="command",
    ),
    RiskyPattern(
        name="ci_config",
        regex=(
            _B + r"(?:\.github/workflows/|\.github/actions/|\.gitlab-ci\.ya?ml\b|\.ci/|\.circleci/"
            r"|Jenkinsfile\b|\.travis\.ya?ml\b|azure-pipelines\.ya?ml\b|\.buildkite/|\.woodpecker)"
        ),
    ),
    RiskyPattern(
        name="dockerfile",
        regex=_B + r"(?:Dockerfile|Containerfile)(?:\.[\w.-]+)?(?![\w-])|[\w.-]+\.[Dd]ockerfile\b",
    ),
    RiskyPattern(
        name="env_file",
        regex=_B + r"\.env(?!\.(?:example|sample|template|dist)\b)(?:\.[\w-]+)?(?![\w/-])|\.envrc\b",
    ),
    RiskyPattern(
        name="credentials",
        regex=(
            _B + r"(?:\.ssh/|\.aws/(?:credentials|config)\b|\.netrc\b|\.npmrc\b|\.pypirc\b"
            r"|\.docker/config\.json|\.git-credentials\b|\.config/gh/|\.kube/config\b|\.gnupg/"
            r"|id_(?:rsa|dsa|ecdsa|ed25519)\b|credentials\.json\b|[\w.-]*\.(?:pem|p12|pfx)\b"
            r"|\.claude/\.credentials\.json|\.codex/auth\.json|\.gemini/oauth_creds\.json"
            r"|secrets?\.(?:ya?ml|json|toml|env)\b)"
        ),
    ),
    # The orchestrator runs git on the host against this repository: a hook or a core.fsmonitor /
    # core.hooksPath setting written by a worker would run code outside the sandbox.
    RiskyPattern(
        name="git_config",
        regex=_B + r"\.git/(?:hooks/|config\b)|\bcore\.(?:hookspath|fsmonitor|sshcommand|pager)\b",
    ),
)

DEFAULT_READ_ONLY_TOOLS = frozenset(
    {
        "read", "glob", "grep", "ls", "notebookread", "webfetch", "websearch", "todowrite", "task",
        "read_file", "read_many_files", "list_directory", "grep_search", "search_file_content",
        "google_web_search", "web_fetch", "web_search", "update_topic", "enter_plan_mode",
    }
)  # fmt: skip


@lru_cache(maxsize=256)
def _compiled(regex: str) -> re.Pattern[str]:
    return re.compile(regex, re.IGNORECASE | re.MULTILINE)


@dataclass
class ToolTexts:
    """The strings of one tool input, sorted by role."""

    commands: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    patches: list[str] = field(default_factory=list)
    deletions: list[str] = field(default_factory=list)


def tool_texts(tool_input: Mapping[str, Any]) -> ToolTexts:
    """Sort the strings of a tool input (any of the three CLIs' shapes) into commands, paths, patches.

    Paths named in a patch's file headers are added to ``paths``; files a patch or a Codex
    ``file_change`` deletes are added to ``deletions``. Unknown keys are ignored.
    """
    texts = ToolTexts()
    _walk(tool_input, None, texts, 0)
    for patch in texts.patches:
        texts.paths.extend(m.strip() for m in _PATCH_PATH.findall(patch))
        texts.deletions.extend(m.strip() for m in _PATCH_DELETE.findall(patch))
    return texts


def _walk(value: Any, key: str | None, texts: ToolTexts, depth: int) -> None:
    if depth > _MAX_DEPTH:
        return
    if isinstance(value, Mapping):
        if value.get("kind") == "delete" and isinstance(value.get("path"), str):
            texts.deletions.append(value["path"])
        for sub_key, sub in value.items():
            _walk(sub, str(sub_key).lower(), texts, depth + 1)
            # Codex's older apply_patch shape keys its changes by path: {"changes": {"/p": {...}}}.
            if key == "changes" and isinstance(sub_key, str):
                texts.paths.append(sub_key)
    elif isinstance(value, list | tuple):
        if key in COMMAND_KEYS and value and all(isinstance(v, str) for v in value):
            texts.commands.append(shlex.join(value))
            return
        for item in value:
            _walk(item, key, texts, depth + 1)
    elif isinstance(value, str) and key is not None:
        if key in COMMAND_KEYS:
            texts.commands.append(value)
        elif key in PATH_KEYS:
            texts.paths.append(value)
        elif key in PATCH_KEYS:
            texts.patches.append(value)


class RiskRules(Model):
    """Which tool calls are risky. Frozen; ``match`` is pure."""

    patterns: tuple[RiskyPattern, ...] = DEFAULT_RISKY_PATTERNS
    worktree: str = Field(
        default="/workspace", pattern=r"^/", description="the worktree inside the container"
    )
    read_only_tools: frozenset[str] = Field(
        default=DEFAULT_READ_ONLY_TOOLS, description="tools (lower case) that never change anything"
    )

    def match(self, call: ToolCall) -> str | None:
        """The name of the first rule the call matches, or ``None``.

        Order: command patterns, then ``delete_outside_worktree``, then file patterns (checked on
        paths, patches and, conservatively, on shell commands too: a shell can write any file it
        names, and telling reads from writes in a shell line is not reliable).
        """
        if call.tool.lower() in self.read_only_tools:
            return None
        texts = tool_texts(call.input)
        for pattern in self.patterns:
            if pattern.target == "command" and _search(pattern.regex, texts.commands):
                return pattern.name
        if any(self.deletes_outside(command) for command in texts.commands) or any(
            self._outside(self.worktree, target) for target in texts.deletions
        ):
            return "delete_outside_worktree"
        everything = [*texts.commands, *texts.paths, *texts.patches]
        for pattern in self.patterns:
            if pattern.target == "any" and _search(pattern.regex, everything):
                return pattern.name
        return None

    def deletes_outside(self, command: str, depth: int = 0) -> bool:
        """Whether a shell command deletes something outside the worktree (or the worktree itself).

        Follows ``cd`` within the line and unwraps ``bash -c '…'``. A target with an unknown
        expansion (``$VAR``, backticks) counts as outside: it cannot be shown to be inside.
        """
        try:
            lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|()\n")
            lexer.whitespace_split = True
            tokens = list(lexer)
        except ValueError:
            # Unbalanced quotes: fall back to the plain shape of the dangerous cases.
            return re.search(r"\brm\s+(?:-\S+\s+)*[\"']?(?:/|~|\$|\.\.)", command) is not None
        cwd = self.worktree
        for segment in _segments(tokens):
            words = _strip_prefixes(segment)
            if not words:
                continue
            program = posixpath.basename(words[0])
            if program in _SHELLS and len(words) >= 3 and words[1].startswith("-") and "c" in words[1]:
                if depth < 3 and self.deletes_outside(words[2], depth + 1):
                    return True
            elif program == "cd":
                cwd = _resolve(cwd, words[1] if len(words) > 1 else "~")
            elif program in _DELETERS:
                if any(self._outside(cwd, target) for target in _operands(words[1:])):
                    return True
            elif program == "find" and ("-delete" in words or "rm" in words):
                roots = [w for w in words[1:] if not w.startswith("-")][:1] or ["."]
                if self._outside(cwd, roots[0]):
                    return True
        return False

    def _outside(self, cwd: str, target: str) -> bool:
        resolved = _resolve(cwd, target)
        root = posixpath.normpath(self.worktree)
        return not resolved.startswith(root + "/")


def _search(regex: str, texts: list[str]) -> bool:
    pattern = _compiled(regex)
    return any(pattern.search(text) for text in texts)


def _segments(tokens: list[str]) -> Iterator[list[str]]:
    segment: list[str] = []
    for token in tokens:
        if token in _SEPARATORS or set(token) <= set(";&|()\n"):
            if segment:
                yield segment
            segment = []
        else:
            segment.append(token)
    if segment:
        yield segment


def _strip_prefixes(words: list[str]) -> list[str]:
    index = 0
    while index < len(words) and (
        words[index] in _PREFIXES or re.fullmatch(r"[A-Za-z_]\w*=\S*", words[index]) or words[index] == "-"
    ):
        index += 1
    return words[index:]


def _operands(args: list[str]) -> list[str]:
    operands: list[str] = []
    options_done = False
    skip_next = False
    for arg in args:
        if skip_next:
            skip_next = False
        elif _REDIRECT.match(arg):
            # ``2>/dev/null`` or ``> log``: a redirection target, not something rm deletes.
            skip_next = _REDIRECT.fullmatch(arg) is not None  # the target is the next word
        elif not options_done and arg == "--":
            options_done = True
        elif options_done or not arg.startswith("-"):
            operands.append(arg)
    return operands


def _resolve(cwd: str, target: str) -> str:
    """An absolute, normalised path; home and unknown expansions resolve to a marker outside."""
    if target.startswith(("~", "$HOME", "${HOME}")):
        return "/~home"
    if "$" in target or "`" in target:
        return "/~unknown"
    return posixpath.normpath(posixpath.join(cwd, target))
