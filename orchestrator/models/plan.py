"""What the planner returns: ``TaskBreakdown`` of ``SubTask``s, validated as a whole."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Literal

from pydantic import Field, field_validator, model_validator

from orchestrator.models.common import AgentName, Model
from orchestrator.paths import TASK_ID_RE


class DirSpec(Model):
    """A directory of the repository a task needs, relative to the repository root."""

    path: str = Field(description="path relative to the repository; must stay inside it")
    mode: Literal["ro", "rw"] = "ro"

    @field_validator("path")
    @classmethod
    def _inside_repo(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("path contains a NUL byte")
        pure = PurePosixPath(value.replace("\\", "/"))
        if pure.is_absolute():
            raise ValueError(f"path {value!r} is absolute; give it relative to the repository")
        if ".." in pure.parts:
            raise ValueError(f"path {value!r} leaves the repository ('..')")
        return str(pure) if str(pure) != "" else "."


class SubTask(Model):
    id: str = Field(description="t1, t2, ...: unique inside the plan")
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(min_length=1)
    agent: AgentName
    dirs: list[DirSpec] = Field(default_factory=list)
    depends_on: list[str] = Field(default_factory=list)
    acceptance: list[str] = Field(default_factory=list)

    @field_validator("id")
    @classmethod
    def _safe_id(cls, value: str) -> str:
        if not TASK_ID_RE.fullmatch(value):
            raise ValueError(f"task id {value!r} must be 1-32 characters of [0-9A-Za-z_-]")
        return value

    @property
    def writes(self) -> bool:
        """True when the task asks for a read-write directory."""
        return any(d.mode == "rw" for d in self.dirs)


class TaskBreakdown(Model):
    goal: str = Field(min_length=1, description="one sentence")
    tasks: list[SubTask] = Field(min_length=1)
    rationale: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> TaskBreakdown:
        ids = [t.id for t in self.tasks]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"task ids are not unique: {', '.join(dupes)}")
        known = set(ids)
        for task in self.tasks:
            missing = [d for d in task.depends_on if d not in known]
            if missing:
                raise ValueError(f"task {task.id} depends on unknown task(s): {', '.join(missing)}")
            if task.id in task.depends_on:
                raise ValueError(f"task {task.id} depends on itself")
        cycle = find_cycle({t.id: list(t.depends_on) for t in self.tasks})
        if cycle:
            raise ValueError(f"dependencies form a cycle: {' -> '.join(cycle)}")
        return self

    def task(self, task_id: str) -> SubTask:
        for task in self.tasks:
            if task.id == task_id:
                return task
        raise KeyError(task_id)


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """Return one cycle of ``graph`` (node -> dependencies) as a path, or None."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(graph, white)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        color[node] = grey
        stack.append(node)
        for dep in graph.get(node, []):
            if color.get(dep, black) == grey:
                return [*stack[stack.index(dep) :], dep]
            if color.get(dep, black) == white:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        color[node] = black
        return None

    for node in graph:
        if color[node] == white:
            found = visit(node)
            if found:
                return found
    return None
