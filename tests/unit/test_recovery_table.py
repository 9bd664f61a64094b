"""The recovery rules, one row per cause x agent of POLICIES.md §2, fed the recorded transcripts' lines.

Each row holds a line as a CLI printed it, the payload the agent adapter must turn it into, and the
action the engine must answer (a writer on rung 0, attempt 1). Lines are copied here, since CI runs
on a clean clone: most are whole lines of ``reference/transcripts``; where no transcript records a
case, the vendor's observed message (``reference/cli-contracts.md``) sits in the envelope the
transcripts' README documents for that CLI's give-up. ``raw=False`` rows (a message seen only in a
command's output or the rollout file) are checked as payloads only. Every other row is checked
three ways: the adapter's parser yields the payload, the payload yields the action, and the raw
line through ``monitor_stream`` yields the same action.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from orchestrator.agents import get_adapter
from orchestrator.agents.base import Stream
from orchestrator.models import events as ev
from orchestrator.models.common import AgentName
from orchestrator.models.recovery import RecoveryKind
from orchestrator.recovery import ExitInfo, PermissionRecoveryEngine, RecoveryPolicy, WorkerView

# fmt: off
# -- exact lines of the recorded transcripts (file named above each) -------------------------------
# claude-2.1.197-write-default-denied.stdout.jsonl
CLAUDE_WRITE_DENIED = '{"type":"user","message":{"role":"user","content":[{"type":"tool_result","content":"Claude requested permissions to write to <WORK>/hello.txt, but you haven\'t granted it yet.","is_error":true,"tool_use_id":"toolu_00022749d9ac"}]},"parent_tool_use_id":null,"session_id":"0fcb6490-f29e-499a-8905-4dc08c29295a","uuid":"4b8a08fa-8ba0-441c-a2fb-e8e6a219b778","timestamp":"2026-11-26T01:22:30.846Z","tool_use_result":"Error: Claude requested permissions to write to <WORK>/hello.txt, but you haven\'t granted it yet."}'
# claude-2.1.197-shellwrite-default-denied.stdout.jsonl
CLAUDE_SHELLWRITE_DENIED = '{"type":"user","message":{"role":"user","content":[{"type":"tool_result","content":"Output redirection to \'<WORK>/hello.txt\' was blocked. For security, Claude Code may only write to files in the allowed working directories for this session: \'<WORK>\'.","is_error":true,"tool_use_id":"toolu_0002fbf0e4e7"}]},"parent_tool_use_id":null,"session_id":"02aadf30-e900-4112-9323-4ccc48866879","uuid":"eb081282-d3d2-4d50-8e0a-51ccb0dae6a6","timestamp":"2026-11-26T01:22:31.885Z","tool_use_result":"Error: Output redirection to \'<WORK>/hello.txt\' was blocked. For security, Claude Code may only write to files in the allowed working directories for this session: \'<WORK>\'."}'
# claude-2.1.197-ratelimit-always-maxretries2.stdout.jsonl
CLAUDE_RETRY_429 = '{"type":"system","subtype":"api_retry","attempt":1,"max_retries":2,"retry_delay_ms":3000,"error_status":429,"error":"rate_limit","session_id":"77fd7dbd-c197-43cb-bfef-44242f823b3a","uuid":"3720b198-91a8-40c4-96e1-3a8dacc9f6e7"}'
# claude-2.1.197-ratelimit-always-maxretries2.stdout.jsonl
CLAUDE_RESULT_429 = '{"type":"result","subtype":"success","is_error":true,"api_error_status":429,"duration_ms":6380,"duration_api_ms":0,"num_turns":1,"result":"API Error: Request rejected (429) · This request would exceed the rate limit for your organization (mock-org) of 50 requests per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. You can see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later. You may also contact sales at https://www.anthropic.com/contact-sales to discuss your options for a rate limit increase.","stop_reason":"stop_sequence","session_id":"77fd7dbd-c197-43cb-bfef-44242f823b3a","total_cost_usd":0,"usage":{"input_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":0,"server_tool_use":{"web_search_requests":0,"web_fetch_requests":0},"service_tier":"standard","cache_creation":{"ephemeral_1h_input_tokens":0,"ephemeral_5m_input_tokens":0},"inference_geo":"","iterations":[],"speed":"standard"},"modelUsage":{},"permission_denials":[],"terminal_reason":"completed","fast_mode_state":"off","uuid":"80df43de-08e4-4727-98ad-e5989f9b1235"}'
# claude-2.1.197-authfail-maxretries2.stdout.jsonl
CLAUDE_RESULT_401 = '{"type":"result","subtype":"success","is_error":true,"api_error_status":401,"duration_ms":1882,"duration_api_ms":0,"num_turns":1,"result":"Invalid API key · Fix external API key","stop_reason":"stop_sequence","session_id":"36e336cb-26a7-4739-9fee-7672b6f4d41b","total_cost_usd":0,"usage":{"input_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":0,"server_tool_use":{"web_search_requests":0,"web_fetch_requests":0},"service_tier":"standard","cache_creation":{"ephemeral_1h_input_tokens":0,"ephemeral_5m_input_tokens":0},"inference_geo":"","iterations":[],"speed":"standard"},"modelUsage":{},"permission_denials":[],"terminal_reason":"completed","fast_mode_state":"off","uuid":"82c43d44-ee7e-44e7-be39-fda062da0c02"}'
# claude-2.1.197-servererror-500-maxretries2.stdout.jsonl
CLAUDE_RESULT_500 = '{"type":"result","subtype":"success","is_error":true,"api_error_status":500,"duration_ms":1907,"duration_api_ms":0,"num_turns":1,"result":"API Error: 500 Internal server error. This is a server-side issue, usually temporary — try again in a moment. If it persists, check your inference gateway (127.0.0.1:<PORT>).","stop_reason":"stop_sequence","session_id":"ff8e9565-9388-45cb-8ce4-e5635c5a4c0d","total_cost_usd":0,"usage":{"input_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":0,"server_tool_use":{"web_search_requests":0,"web_fetch_requests":0},"service_tier":"standard","cache_creation":{"ephemeral_1h_input_tokens":0,"ephemeral_5m_input_tokens":0},"inference_geo":"","iterations":[],"speed":"standard"},"modelUsage":{},"permission_denials":[],"terminal_reason":"completed","fast_mode_state":"off","uuid":"4e2b3a6d-4cf5-40e2-8939-012022bc72c9"}'
# claude-2.1.197-overloaded-529.stdout.jsonl
CLAUDE_RESULT_529 = '{"type":"result","subtype":"success","is_error":true,"api_error_status":null,"duration_ms":1878,"duration_api_ms":0,"num_turns":1,"result":"API Error: Repeated 529 Overloaded errors. The API is at capacity — this is usually temporary. Try again in a moment. If it persists, check your inference gateway (127.0.0.1:<PORT>).","stop_reason":"stop_sequence","session_id":"67a2e653-72fa-4dcc-aa48-4ddfaefb4c59","total_cost_usd":0,"usage":{"input_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":0,"server_tool_use":{"web_search_requests":0,"web_fetch_requests":0},"service_tier":"standard","cache_creation":{"ephemeral_1h_input_tokens":0,"ephemeral_5m_input_tokens":0},"inference_geo":"","iterations":[],"speed":"standard"},"modelUsage":{},"permission_denials":[],"terminal_reason":"completed","fast_mode_state":"off","uuid":"4e9c2172-0a2b-4cb1-87aa-7a70173afe50"}'
# claude-2.1.197-streamcut-abort.stdout.jsonl
CLAUDE_RESULT_CUT = '{"type":"result","subtype":"success","is_error":true,"api_error_status":null,"duration_ms":427,"duration_api_ms":230,"num_turns":1,"result":"API Error: Connection closed mid-response. The response above may be incomplete.","stop_reason":"stop_sequence","session_id":"f2d40b9f-b819-40d3-8ce4-cc3a6bb2b947","total_cost_usd":0.00007500000000000001,"usage":{"input_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":0,"server_tool_use":{"web_search_requests":0,"web_fetch_requests":0},"service_tier":"standard","cache_creation":{"ephemeral_1h_input_tokens":0,"ephemeral_5m_input_tokens":0},"inference_geo":"","iterations":[],"speed":"standard"},"modelUsage":{"claude-opus-4-8[1m]":{"inputTokens":10,"outputTokens":1,"cacheReadInputTokens":0,"cacheCreationInputTokens":0,"webSearchRequests":0,"costUSD":0.00007500000000000001,"contextWindow":1000000,"maxOutputTokens":64000}},"permission_denials":[],"terminal_reason":"completed","fast_mode_state":"off","uuid":"5ffb616e-7bc9-476d-b959-3585313aa5e7"}'
# claude-2.1.197-streamcut-eof.stdout.jsonl
CLAUDE_RESULT_EOF = '{"type":"result","subtype":"success","is_error":false,"api_error_status":null,"duration_ms":338,"duration_api_ms":216,"ttft_ms":285,"ttft_stream_ms":136,"time_to_request_ms":125,"num_turns":1,"result":"I will use a tool.","stop_reason":null,"session_id":"378a829d-d915-49e5-83a3-5bb12aa9930d","total_cost_usd":0,"usage":{"input_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":0,"server_tool_use":{"web_search_requests":0,"web_fetch_requests":0},"service_tier":"standard","cache_creation":{"ephemeral_1h_input_tokens":0,"ephemeral_5m_input_tokens":0},"inference_geo":"","iterations":[],"speed":"standard"},"modelUsage":{},"permission_denials":[],"terminal_reason":"completed","fast_mode_state":"off","uuid":"3a1d075e-1847-444e-97e5-c1760a1032d7"}'
# codex-0.169.0-write-default-denied.stderr.txt
CODEX_PATCH_REJECTED = '2026-11-26T01:22:44.924505Z ERROR codex_core::tools::router: error=patch rejected: writing is blocked by read-only sandbox; rejected by user approval settings'
# codex-0.169.0-ratelimit-always.stdout.jsonl
CODEX_RETRY_429 = '{"type":"error","message":"Reconnecting... 1/5 (exceeded retry limit, last status: 429 Too Many Requests, request id: req_0001701d26d2)"}'
# codex-0.169.0-ratelimit-always.stdout.jsonl
CODEX_FAILED_429 = '{"type":"turn.failed","error":{"message":"exceeded retry limit, last status: 429 Too Many Requests, request id: req_0006532811cc"}}'
# codex-0.169.0-authfail.stdout.jsonl
CODEX_FAILED_401 = '{"type":"turn.failed","error":{"message":"unexpected status 401 Unauthorized: Incorrect API key provided: dummy. You can find your API key at https://platform.openai.com/account/api-keys., url: http://127.0.0.1:<PORT>/v1/responses, request id: req_0006a097e441"}}'
# codex-0.169.0-servererror-500.stdout.jsonl
CODEX_FAILED_500 = '{"type":"turn.failed","error":{"message":"We’re currently experiencing high demand, which may cause temporary errors."}}'  # noqa: RUF001 - the CLI's own apostrophe
# codex-0.169.0-streamcut-eof.stdout.jsonl
CODEX_FAILED_CUT = '{"type":"turn.failed","error":{"message":"stream disconnected before completion: stream closed before response.completed"}}'
# gemini-0.61.0-write-default-denied.stdout.jsonl
GEMINI_NOT_REGISTERED = '{"type":"tool_result","timestamp":"2026-11-26T01:22:57.846Z","tool_id":"write_file__write_file_1795656177779_0","status":"error","output":"Tool \\"write_file\\" not found. Did you mean one of: \\"read_file\\", \\"update_topic\\", \\"grep_search\\"?","error":{"type":"tool_not_registered","message":"Tool \\"write_file\\" not found. Did you mean one of: \\"read_file\\", \\"update_topic\\", \\"grep_search\\"?"}}'
# gemini-0.61.0-shellwrite-yolo-policy-denied.stdout.jsonl
GEMINI_POLICY_DENIED = '{"type":"tool_result","timestamp":"2026-11-26T01:23:22.109Z","tool_id":"run_shell_command__run_shell_command_1795656201942_0","status":"error","output":"Tool execution denied by policy.","error":{"type":"policy_violation","message":"Tool execution denied by policy."}}'
# gemini-0.61.0-servererror-500-maxattempts2.stderr.txt
GEMINI_RETRY_500 = 'Attempt 1 failed with status 500. Retrying with backoff... _ApiError: {"error":{"code":500,"message":"An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting","status":"INTERNAL"}}'
# gemini-0.61.0-ratelimit-always-maxattempts2.stdout.jsonl
GEMINI_RESULT_429 = '{"type":"result","timestamp":"2026-11-26T01:39:17.455Z","status":"error","error":{"type":"unknown","message":"[API Error: You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. To monitor your current usage, head to: https://ai.dev/usage?tab=rate-limit. \\n* Quota exceeded for metric: generativelanguage.googleapis.com/generate_content_free_tier_requests, limit: 10, model: gemini-3.1-pro-preview\\nPlease retry in 3s.\\nSuggested retry after 3s.]\\nPlease wait and try again later. To increase your limits, request a quota increase through AI Studio, or switch to another /auth method"},"stats":{"total_tokens":0,"input_tokens":0,"output_tokens":0,"cached":0,"input":0,"duration_ms":0,"tool_calls":0,"models":{"gemini-3.5-flash-lite":{"total_tokens":0,"input_tokens":0,"output_tokens":0,"cached":0,"input":0},"gemini-3.1-pro-preview":{"total_tokens":0,"input_tokens":0,"output_tokens":0,"cached":0,"input":0}}}}'
# gemini-0.61.0-authfail.stdout.jsonl
GEMINI_RESULT_401 = '{"type":"result","timestamp":"2026-11-26T01:40:58.102Z","status":"error","error":{"type":"unknown","message":"[API Error: {\\"error\\":{\\"code\\":401,\\"message\\":\\"API key not valid. Please pass a valid API key.\\",\\"status\\":\\"UNAUTHENTICATED\\",\\"details\\":[{\\"@type\\":\\"type.googleapis.com/google.rpc.ErrorInfo\\",\\"reason\\":\\"API_KEY_INVALID\\",\\"domain\\":\\"googleapis.com\\",\\"metadata\\":{\\"service\\":\\"generativelanguage.googleapis.com\\"}},{\\"@type\\":\\"type.googleapis.com/google.rpc.LocalizedMessage\\",\\"locale\\":\\"en-US\\",\\"message\\":\\"API key not valid. Please pass a valid API key.\\"}]}}]"},"stats":{"total_tokens":0,"input_tokens":0,"output_tokens":0,"cached":0,"input":0,"duration_ms":0,"tool_calls":0,"models":{"gemini-3.5-flash-lite":{"total_tokens":0,"input_tokens":0,"output_tokens":0,"cached":0,"input":0},"gemini-3.1-pro-preview":{"total_tokens":0,"input_tokens":0,"output_tokens":0,"cached":0,"input":0}}}}'
# gemini-0.61.0-servererror-500-maxattempts2.stdout.jsonl
GEMINI_RESULT_500 = '{"type":"result","timestamp":"2026-11-26T01:44:25.927Z","status":"error","error":{"type":"unknown","message":"[API Error: {\\"error\\":{\\"code\\":500,\\"message\\":\\"An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting\\",\\"status\\":\\"INTERNAL\\"}}]"},"stats":{"total_tokens":0,"input_tokens":0,"output_tokens":0,"cached":0,"input":0,"duration_ms":0,"tool_calls":0,"models":{"gemini-3.5-flash-lite":{"total_tokens":0,"input_tokens":0,"output_tokens":0,"cached":0,"input":0},"gemini-3.1-pro-preview":{"total_tokens":0,"input_tokens":0,"output_tokens":0,"cached":0,"input":0}}}}'
# gemini-0.61.0-overloaded-503-model-pinned-maxattempts2.stdout.jsonl
GEMINI_RESULT_503 = '{"type":"result","timestamp":"2026-11-26T01:51:22.019Z","status":"error","error":{"type":"unknown","message":"[API Error: The model is overloaded. Please try again later.]"},"stats":{"total_tokens":0,"input_tokens":0,"output_tokens":0,"cached":0,"input":0,"duration_ms":0,"tool_calls":0,"models":{"gemini-2.5-flash":{"total_tokens":0,"input_tokens":0,"output_tokens":0,"cached":0,"input":0}}}}'
# gemini-0.61.0-streamcut-abort.stdout.jsonl
GEMINI_RESULT_CUT = '{"type":"result","timestamp":"2026-11-26T01:46:28.740Z","status":"error","error":{"type":"unknown","message":"[API Error: terminated]"},"stats":{"total_tokens":30,"input_tokens":10,"output_tokens":20,"cached":0,"input":10,"duration_ms":0,"tool_calls":0,"models":{"mock":{"total_tokens":30,"input_tokens":10,"output_tokens":20,"cached":0,"input":10}}}}'
# gemini-0.61.0-streamcut-eof.stdout.jsonl
GEMINI_NO_FINISH = '{"type":"error","timestamp":"2026-11-26T01:46:38.084Z","severity":"error","message":"Model stream ended without a finish reason."}'

# -- observed messages without a recorded transcript (reference/cli-contracts.md) -------------------
CLAUDE_PROMPT_TOO_LONG = "Prompt is too long · the request is ~250000 tokens (limit 200000) but this conversation is only ~2637 tokens — the rest is system prompt, tool definitions, and attachment content. …"
CODEX_BWRAP = "bwrap: No permissions to create a new namespace, likely because the kernel does not allow non-privileged user namespaces. On e.g. debian this can be enabled with 'sysctl kernel.unprivileged_userns_clone=1'."
CODEX_USAGE_LIMIT = "You’ve hit your usage limit. Upgrade to Pro (https://chatgpt.com/explore/pro), visit https://chatgpt.com/settings/usage to purchase more credits or try again later."  # noqa: RUF001 - the CLI's own apostrophe
CODEX_503 = "unexpected status 503 Service Unavailable: The server is overloaded or not ready yet., url: http://127.0.0.1:<PORT>/v1/responses, request id: …"
CODEX_CONTEXT = "Codex ran out of room in the model's context window. Start a new thread or clear earlier history before retrying."
GEMINI_CONTEXT = '[API Error: {"error":{"code":400,"message":"The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}]'
CLAUDE_ROOT_BYPASS = "--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons"
CLAUDE_NO_SESSION = "No conversation found with session ID: 0fcb6490-f29e-499a-8905-4dc08c29295a"
GEMINI_UNTRUSTED = "\x1b[31mGemini CLI is not running in a trusted directory. To proceed, either use `--skip-trust`, set the `GEMINI_CLI_TRUST_WORKSPACE=true` environment variable, or trust this directory in interactive mode. For more details, see https://geminicli.com/docs/cli/trusted-folders/#headless-and-automated-environments\x1b[0m"
# fmt: on


def claude_gave_up(text: str, status: int, terminal_reason: str) -> str:
    """Claude's ``result`` line for an API failure: ``subtype`` success, ``is_error`` true."""
    return json.dumps({"type": "result", "subtype": "success", "is_error": True, "api_error_status": status,
                       "terminal_reason": terminal_reason, "result": text}, ensure_ascii=False)  # fmt: skip


def codex_gave_up(reason: str) -> str:
    """Codex's ``turn.failed`` line: ``{"type":"turn.failed","error":{"message":"<reason>"}}``."""
    return json.dumps({"type": "turn.failed", "error": {"message": reason}}, ensure_ascii=False)


def gemini_gave_up(message: str) -> str:
    """Gemini's final ``result`` line of status error."""
    return json.dumps({"type": "result", "status": "error", "error": {"type": "unknown", "message": message}})


CLAUDE, CODEX, GEMINI = AgentName.CLAUDE, AgentName.CODEX, AgentName.GEMINI


@dataclass(frozen=True)
class Row:
    """One line a CLI printed, the payload it means, and the action that must follow."""

    id: str
    agent: AgentName
    stream: Stream
    line: str
    raw: bool
    payload: ev.EventData
    kind: RecoveryKind | None
    cause: str | None


def denied(tool: str, detail: str, *, by_policy: bool = False) -> ev.PermissionDenied:
    return ev.PermissionDenied(tool=tool, detail=detail, by_policy=by_policy)


CLAUDE_WRITE_TEXT = (
    "Claude requested permissions to write to <WORK>/hello.txt, but you haven't granted it yet."
)
CLAUDE_REDIRECT_TEXT = (
    "Output redirection to '<WORK>/hello.txt' was blocked. For security, Claude Code may only write to files in "
    "the allowed working directories for this session: '<WORK>'."
)
CODEX_PATCH_TEXT = (
    "patch rejected: writing is blocked by read-only sandbox; rejected by user approval settings"
)
GEMINI_NOT_FOUND = (
    'Tool "write_file" not found. Did you mean one of: "read_file", "update_topic", "grep_search"?'
)

# fmt: off
STREAM_ROWS = [
    # claude
    Row("claude-write-denied", CLAUDE, "stdout", CLAUDE_WRITE_DENIED, True,
        denied("Write", CLAUDE_WRITE_TEXT), "escalate_permissions", "permission_denied"),
    Row("claude-shellwrite-denied", CLAUDE, "stdout", CLAUDE_SHELLWRITE_DENIED, True,
        denied("Bash", CLAUDE_REDIRECT_TEXT), "escalate_permissions", "permission_denied"),
    Row("claude-api-retry-429", CLAUDE, "stdout", CLAUDE_RETRY_429, True,
        ev.CliRetry(attempt=1, detail="rate_limit"), None, None),
    Row("claude-429-gave-up", CLAUDE, "stdout", CLAUDE_RESULT_429, True,
        ev.RateLimited(detail="API Error: Request rejected (429)"), "backoff_restart", "rate_limited"),
    Row("claude-401", CLAUDE, "stdout", CLAUDE_RESULT_401, True,
        ev.AuthFailed(detail="Invalid API key · Fix external API key"), "give_up", "auth_failed"),
    Row("claude-500", CLAUDE, "stdout", CLAUDE_RESULT_500, True,
        ev.ApiError(kind="server_error", status=500, detail="API Error: 500 Internal server error."), "resume", "api_failure"),
    Row("claude-529", CLAUDE, "stdout", CLAUDE_RESULT_529, True,
        ev.ApiError(kind="overloaded", detail="API Error: Repeated 529 Overloaded errors."), "resume", "api_failure"),
    Row("claude-stream-cut", CLAUDE, "stdout", CLAUDE_RESULT_CUT, True,
        ev.ApiError(kind="stream_cut", detail="API Error: Connection closed mid-response."), "resume", "api_failure"),
    Row("claude-prompt-too-long", CLAUDE, "stdout", claude_gave_up(CLAUDE_PROMPT_TOO_LONG, 400, "prompt_too_long"), True,
        ev.ApiError(kind="context_overflow", status=400, detail=CLAUDE_PROMPT_TOO_LONG), "give_up", "context_overflow"),
    # codex
    Row("codex-patch-rejected", CODEX, "stderr", CODEX_PATCH_REJECTED, True,
        denied("apply_patch", CODEX_PATCH_TEXT), "escalate_permissions", "permission_denied"),
    Row("codex-bwrap", CODEX, "stderr", CODEX_BWRAP, False,
        denied("exec_command", CODEX_BWRAP), "escalate_permissions", "permission_denied"),
    Row("codex-reconnecting-429", CODEX, "stdout", CODEX_RETRY_429, True,
        ev.CliRetry(attempt=1, detail="exceeded retry limit, last status: 429"), None, None),
    Row("codex-429-gave-up", CODEX, "stdout", CODEX_FAILED_429, True,
        ev.RateLimited(detail="exceeded retry limit, last status: 429 Too Many Requests"), "backoff_restart", "rate_limited"),
    Row("codex-usage-limit", CODEX, "stdout", codex_gave_up(CODEX_USAGE_LIMIT), True,
        ev.RateLimited(detail=CODEX_USAGE_LIMIT), "backoff_restart", "rate_limited"),
    Row("codex-401", CODEX, "stdout", CODEX_FAILED_401, True,
        ev.AuthFailed(detail="unexpected status 401 Unauthorized"), "give_up", "auth_failed"),
    Row("codex-500", CODEX, "stdout", CODEX_FAILED_500, True,
        ev.ApiError(kind="server_error", detail="We’re currently experiencing high demand"), "resume", "api_failure"),  # noqa: RUF001 - the CLI's own apostrophe
    Row("codex-503", CODEX, "stdout", codex_gave_up(CODEX_503), True,
        ev.ApiError(kind="overloaded", status=503, detail=CODEX_503), "resume", "api_failure"),
    Row("codex-stream-cut", CODEX, "stdout", CODEX_FAILED_CUT, True,
        ev.ApiError(kind="stream_cut", detail="stream closed before response.completed"), "resume", "api_failure"),
    Row("codex-context", CODEX, "stdout", codex_gave_up(CODEX_CONTEXT), True,
        ev.ApiError(kind="context_overflow", detail=CODEX_CONTEXT), "give_up", "context_overflow"),
    # gemini
    Row("gemini-tool-not-registered", GEMINI, "stdout", GEMINI_NOT_REGISTERED, True,
        denied("write_file", GEMINI_NOT_FOUND), "escalate_permissions", "permission_denied"),
    Row("gemini-our-policy-denied", GEMINI, "stdout", GEMINI_POLICY_DENIED, True,
        denied("run_shell_command", "Tool execution denied by policy.", by_policy=True), None, None),
    Row("gemini-attempt-failed-500", GEMINI, "stderr", GEMINI_RETRY_500, True,
        ev.CliRetry(attempt=1, detail="status 500"), None, None),
    Row("gemini-429-gave-up", GEMINI, "stdout", GEMINI_RESULT_429, True,
        ev.RateLimited(retry_after_s=3.0, detail="You exceeded your current quota"), "backoff_restart", "rate_limited"),
    Row("gemini-401", GEMINI, "stdout", GEMINI_RESULT_401, True,
        ev.AuthFailed(detail="API key not valid. Please pass a valid API key."), "give_up", "auth_failed"),
    Row("gemini-500", GEMINI, "stdout", GEMINI_RESULT_500, True,
        ev.ApiError(kind="server_error", status=500, detail="An internal error has occurred."), "resume", "api_failure"),
    Row("gemini-503", GEMINI, "stdout", GEMINI_RESULT_503, True,
        ev.ApiError(kind="overloaded", status=503, detail="The model is overloaded."), "resume", "api_failure"),
    Row("gemini-stream-cut", GEMINI, "stdout", GEMINI_RESULT_CUT, True,
        ev.ApiError(kind="stream_cut", detail="[API Error: terminated]"), "resume", "api_failure"),
    Row("gemini-no-finish-reason", GEMINI, "stdout", GEMINI_NO_FINISH, True,
        ev.ApiError(kind="stream_cut", detail="Model stream ended without a finish reason."), "resume", "api_failure"),
    Row("gemini-context", GEMINI, "stdout", gemini_gave_up(GEMINI_CONTEXT), True,
        ev.ApiError(kind="context_overflow", status=400, detail=GEMINI_CONTEXT), "give_up", "context_overflow"),
    # refusals to start: none is fixed by running the same command again, except a lost session store
    Row("claude-root-bypass", CLAUDE, "stderr", CLAUDE_ROOT_BYPASS, True,
        ev.CliRefused(reason="root_bypass", detail=CLAUDE_ROOT_BYPASS), "give_up", "cli_refused"),
    Row("claude-resume-not-found", CLAUDE, "stderr", CLAUDE_NO_SESSION, True,
        ev.CliRefused(reason="resume_not_found", detail=CLAUDE_NO_SESSION), "restart", "cli_refused"),
    Row("gemini-untrusted-folder", GEMINI, "stderr", GEMINI_UNTRUSTED, True,
        ev.CliRefused(reason="untrusted_workspace", detail=GEMINI_UNTRUSTED), "give_up", "cli_refused"),
]
# fmt: on


@dataclass(frozen=True)
class ExitRow:
    """How a container ended (after the lines above) and the action that must follow."""

    id: str
    agent: AgentName
    exit: ExitInfo
    kind: RecoveryKind | None
    cause: str | None


# fmt: off
EXIT_ROWS = [
    ExitRow("clean-finish", CLAUDE, ExitInfo(exit_code=0, result_ok=True), None, None),
    # claude-2.1.197-streamcut-eof: result "success" with stop_reason null, exit 0: the tool call is lost
    ExitRow("claude-success-without-message-stop", CLAUDE,
            ExitInfo(exit_code=0, result_ok=True, turn_incomplete=True), "resume", "turn_incomplete"),
    # gemini-0.61.0-streamcut-eof: "Model stream ended without a finish reason.", result status error, exit 0
    ExitRow("gemini-no-finish-reason-exit-0", GEMINI, ExitInfo(exit_code=0, result_ok=False), "resume", "turn_incomplete"),
    ExitRow("gemini-exit-173", GEMINI, ExitInfo(exit_code=173, reason="crashed"), "backoff_restart", "rate_limited"),
    ExitRow("gemini-exit-145", GEMINI, ExitInfo(exit_code=145, reason="crashed"), "give_up", "auth_failed"),
    ExitRow("gemini-exit-41", GEMINI, ExitInfo(exit_code=41, reason="crashed"), "give_up", "auth_failed"),
    ExitRow("codex-exit-1", CODEX, ExitInfo(exit_code=1, reason="crashed"), "resume", "crashed"),
    ExitRow("claude-exit-1", CLAUDE, ExitInfo(exit_code=1, reason="finished"), "resume", "crashed"),
    ExitRow("codex-no-exit-code", CODEX, ExitInfo(exit_code=None, reason="crashed"), "resume", "crashed"),
    ExitRow("claude-173-is-a-crash", CLAUDE, ExitInfo(exit_code=173, reason="crashed"), "resume", "crashed"),
    ExitRow("oom", CODEX, ExitInfo(exit_code=137, reason="oom"), "raise_memory", "out_of_memory"),
    ExitRow("stalled", GEMINI, ExitInfo(exit_code=137, reason="stalled"), "resume", "stalled"),
    ExitRow("task-timeout", CODEX, ExitInfo(exit_code=137, reason="timeout"), "give_up", "timeout"),
    ExitRow("stopped", CLAUDE, ExitInfo(exit_code=143, reason="stopped"), None, None),
    ExitRow("killed", CLAUDE, ExitInfo(exit_code=137, reason="killed"), None, None),
]
# fmt: on

ENGINE = PermissionRecoveryEngine(RecoveryPolicy())


def writer(agent: AgentName, **fields: object) -> WorkerView:
    """A write task's worker on rung 0, attempt 1, whose CLI printed its session id."""
    return WorkerView.model_validate(
        {"name": f"{agent.value}-t1", "agent": agent, "cli_session_id": "s-1", **fields}
    )


@pytest.mark.parametrize("row", STREAM_ROWS, ids=[r.id for r in STREAM_ROWS])
def test_stream_row(row: Row) -> None:
    """Each cause x agent of POLICIES.md §2 gets its action; the cause names the rule that fired."""
    action = ENGINE.monitor_stream(row.payload, writer(row.agent))
    assert (row.kind, row.cause) == ((action.kind, action.cause) if action else (None, None))


@pytest.mark.parametrize("row", [r for r in STREAM_ROWS if r.kind], ids=[r.id for r in STREAM_ROWS if r.kind])
def test_every_action_names_its_worker_the_next_attempt_and_the_evidence(row: Row) -> None:
    """An action names the worker, starts attempt 2 (or gives up on 1) and carries the evidence."""
    action = ENGINE.monitor_stream(row.payload, writer(row.agent))
    assert action is not None
    expected_attempt = 1 if row.kind == "give_up" else 2
    assert (f"{row.agent.value}-t1", expected_attempt) == (action.worker, action.attempt)
    assert action.evidence


@pytest.mark.parametrize("row", EXIT_ROWS, ids=[r.id for r in EXIT_ROWS])
def test_exit_row(row: ExitRow) -> None:
    """How a container ended decides what follows, when no line already decided it."""
    action = ENGINE.on_exit(writer(row.agent), row.exit)
    assert (row.kind, row.cause) == ((action.kind, action.cause) if action else (None, None))


@pytest.mark.parametrize(
    ("agent", "tool", "expected_flags"),
    [
        (CLAUDE, "Write", ["--permission-mode", "acceptEdits"]),
        (GEMINI, "write_file", ["--approval-mode", "auto_edit"]),
        (CODEX, "apply_patch", ["--sandbox", "workspace-write"]),
    ],
)
def test_escalation_climbs_one_rung(agent: AgentName, tool: str, expected_flags: list[str]) -> None:
    """A denial restarts the worker one rung up with that rung's flags."""
    action = ENGINE.monitor_stream(denied(tool, "denied"), writer(agent))
    assert action is not None
    assert (1, expected_flags) == (action.rung, action.new_flags)


@pytest.mark.parametrize(
    ("agent", "expected_flags"),
    [
        (CLAUDE, ["--permission-mode", "bypassPermissions"]),
        (GEMINI, ["--approval-mode", "yolo"]),
        (CODEX, ["--dangerously-bypass-approvals-and-sandbox"]),
    ],
)
def test_fix_methods_compute_the_next_rung(agent: AgentName, expected_flags: list[str]) -> None:
    """The seed's ``_fix_<agent>`` give the flags and rung one step up from the worker's rung."""
    fix = {CLAUDE: ENGINE._fix_claude, GEMINI: ENGINE._fix_gemini, CODEX: ENGINE._fix_codex}[agent]
    assert (expected_flags, 2) == fix(writer(agent, rung=1))


def test_fix_method_refuses_another_agent() -> None:
    """``_fix_codex`` on a Claude worker is a programming error naming both agents."""
    with pytest.raises(ValueError, match="runs claude, not codex"):
        ENGINE._fix_codex(writer(CLAUDE))


RAW_ROWS = [r for r in STREAM_ROWS if r.raw]


def same_payload(expected: ev.EventData, actual: ev.EventData) -> bool:
    """Same payload class and, where the rules branch on them, the same kind / reason / by_policy."""
    keys = ("kind", "reason", "by_policy")
    return type(expected) is type(actual) and all(
        getattr(expected, k, None) == getattr(actual, k, None) for k in keys
    )


@pytest.mark.parametrize("row", RAW_ROWS, ids=[r.id for r in RAW_ROWS])
def test_the_adapter_reads_the_line_as_the_row_payload(row: Row) -> None:
    """The agent adapter's parser turns each recorded line into the payload the row expects."""
    payloads = get_adapter(row.agent).parser().parse_line(row.stream, row.line)
    assert any(same_payload(row.payload, p) for p in payloads), payloads


@pytest.mark.parametrize("row", RAW_ROWS, ids=[r.id for r in RAW_ROWS])
def test_a_raw_line_gets_the_same_action_as_its_payload(row: Row) -> None:
    """``monitor_stream`` on the raw line (parsed by the real adapter) answers like the row says."""
    action = PermissionRecoveryEngine(RecoveryPolicy()).monitor_stream(
        ev.Output(stream=row.stream, line=row.line),
        writer(row.agent),
    )
    assert (row.kind, row.cause) == ((action.kind, action.cause) if action else (None, None))


# fmt: off
FINISH_ROWS = [
    # (agent, exit code, kind, cause): what the adapter concludes at the end when the stream named nothing
    (GEMINI, 173, "backoff_restart", "rate_limited"),
    (GEMINI, 145, "give_up", "auth_failed"),
    (GEMINI, 41, "give_up", "auth_failed"),
    (GEMINI, 244, "resume", "api_failure"),
    (CLAUDE, 1, "resume", "crashed"),
    (CODEX, 1, "resume", "crashed"),
]
# fmt: on


@pytest.mark.parametrize(("agent", "code", "kind", "cause"), FINISH_ROWS)
def test_exit_codes_through_the_adapter(agent: AgentName, code: int, kind: str, cause: str) -> None:
    """With raw lines, ``on_exit`` first judges the adapter's ``finish(exit_code)``; same decisions."""
    engine = PermissionRecoveryEngine(RecoveryPolicy())
    worker = writer(agent)
    engine.monitor_stream("", worker)  # the run's parser now exists
    action = engine.on_exit(worker, ExitInfo(exit_code=code, reason="crashed"))
    assert (kind, cause) == ((action.kind, action.cause) if action else (None, None))


# codex-0.169.0-shellwrite-default-denied.requests.jsonl: the tool output Codex sent back to the model;
# its rollout file records the same output as a function_call_output (stdout and stderr show nothing).
CODEX_SHELLWRITE_OUTPUT = (
    "Chunk ID: 7a0165\nWall time: 0.0000 seconds\nProcess exited with code 1\nOriginal token count: 13\n"
    "Output:\n/bin/bash: line 1: hello.txt: Read-only file system\n"
)


@pytest.mark.parametrize("output", [CODEX_SHELLWRITE_OUTPUT, CODEX_BWRAP], ids=["read-only-fs", "bwrap"])
def test_a_codex_sandbox_denial_in_the_rollout_file_escalates(output: str) -> None:
    """A sandbox denial only Codex's rollout file shows climbs the ladder like any other denial."""
    rollout = json.dumps(
        {
            "type": "response_item",
            "payload": {"type": "function_call_output", "call_id": "call_1", "output": output},
        }
    )
    action = PermissionRecoveryEngine(RecoveryPolicy()).monitor_transcript(rollout, writer(CODEX))
    assert action is not None
    assert (action.kind, action.new_flags) == ("escalate_permissions", ["--sandbox", "workspace-write"])
