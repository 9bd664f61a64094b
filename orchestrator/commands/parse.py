"""``orchestrate parse``: an agent CLI's recorded output as normalised events, one JSON line each."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from orchestrator.agents import Stream, StreamParser, get_adapter
from orchestrator.errors import UsageError
from orchestrator.models.events import TYPE_OF, EventData, Output


def _lines(path: Path, what: str) -> Iterator[str]:
    """The lines of ``path`` without newlines; undecodable bytes are replaced, never fatal."""
    try:
        with path.open("rb") as handle:
            for raw in handle:
                yield raw.decode("utf-8", "replace").rstrip("\r\n")
    except OSError as exc:
        raise UsageError(
            f"{what} {str(path)!r} cannot be read ({exc.strerror}): check its permissions"
        ) from exc


def parse_files(
    parser: StreamParser,
    stdout: Path,
    stderr: Path | None = None,
    transcript: Path | None = None,
    exit_code: int | None = None,
    *,
    raw: bool = False,
) -> Iterator[EventData]:
    """The payloads of a recorded run: stdout, then stderr, then the CLI's session log, then its end.

    With ``raw``, a line that yields nothing comes out as an ``output`` payload, as the store keeps it.
    Missing files are checked before any line is read.
    """
    for path, what in ((stdout, "stdout file"), (stderr, "stderr file"), (transcript, "transcript file")):
        if path is not None and not path.is_file():
            raise UsageError(
                f"{what} {str(path)!r} is not a readable file: give the path of a recorded {what}"
            )
    streams: list[tuple[Stream, Path]] = [("stdout", stdout)]
    if stderr is not None:
        streams.append(("stderr", stderr))
    for stream, path in streams:
        for line in _lines(path, f"{stream} file"):
            found = parser.parse_line(stream, line)
            if not found and raw and line:
                found = [Output(stream=stream, line=line)]
            yield from found
    if transcript is not None:
        for line in _lines(transcript, "transcript file"):
            yield from parser.parse_transcript_line(line)
    yield from parser.finish(exit_code)


def event_line(data: EventData) -> str:
    """``{"type": ..., "data": {...}}`` as one JSON line."""
    body: dict[str, Any] = {"type": TYPE_OF[type(data)], "data": data.model_dump(mode="json")}
    return orjson.dumps(body).decode()


def register(app: typer.Typer) -> None:
    @app.command()
    def parse(
        stdout_file: Annotated[Path, typer.Argument(help="the CLI's recorded stdout", show_default=False)],
        agent: Annotated[str, typer.Option("--agent", help="claude, codex or gemini")],
        stderr: Annotated[Path | None, typer.Option("--stderr", help="the CLI's recorded stderr")] = None,
        transcript: Annotated[
            Path | None, typer.Option("--transcript", help="the CLI's own session log (Codex rollout)")
        ] = None,
        exit_code: Annotated[
            int | None, typer.Option("--exit-code", help="the CLI's exit code, for end-of-run conclusions")
        ] = None,
        raw: Annotated[
            bool, typer.Option("--raw", help="also print lines that yield nothing as output")
        ] = False,
    ) -> None:
        """Print the normalised events of a recorded agent run as JSON lines ({"type", "data"})."""
        parser = get_adapter(agent).parser()
        for data in parse_files(parser, stdout_file, stderr, transcript, exit_code, raw=raw):
            typer.echo(event_line(data))
