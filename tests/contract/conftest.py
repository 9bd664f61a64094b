"""One contract, two runtimes: every test here runs on ``FakeRuntime`` and on ``DockerRuntime``.

A test describes a container by what it does (a ``Program``: lines to print, an exit code, whether
it hangs or ignores SIGTERM), not by a command. The harness turns a program into a shell script
for Docker and into a ``FakeProcess`` for the fake, so both must behave alike. The Docker runs are
marked ``integration`` and use the light base image; every container and network they create
carries a per-test label and is removed at teardown, whatever happened.
"""

from __future__ import annotations

import itertools
import shlex
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

import pytest

from orchestrator.config import Settings
from orchestrator.runtime import ContainerSpec, FakeLine, FakeProcess, FakeRuntime, Runtime, TmpfsSpec

TEST_LABEL = "orchestrator.test"
PROGRAM_LABEL = "orchestrator.test-program"
MiB = 1024**2


@dataclass(frozen=True)
class Program:
    """What a container does, in terms both runtimes can play."""

    lines: tuple[tuple[Literal["stdout", "stderr"], str], ...] = ()
    exit_code: int = 0
    every_s: float = 0.0
    partial: str | None = None
    hang: bool = False
    ignore_term: bool = False
    oom: bool = False

    def shell(self) -> str:
        steps = ["trap '' TERM"] if self.ignore_term else []
        for stream, text in self.lines:
            if self.every_s:
                steps.append(f"sleep {self.every_s}")
            steps.append(f"printf '%s\\n' {shlex.quote(text)}" + (" >&2" if stream == "stderr" else ""))
        if self.partial is not None:
            steps.append(f"printf '%s' {shlex.quote(self.partial)}")
        if self.oom:  # exec: the hog is the container's process, as an agent CLI is
            return "; ".join([*steps, "exec python3 -c 'b = bytearray(512 * 1024 * 1024); print(len(b))'"])
        if self.hang:
            steps.append("while :; do sleep 0.1; done")
        steps.append(f"exit {self.exit_code}")
        return "; ".join(steps)

    def fake(self) -> FakeProcess:
        lines = [FakeLine(text, stream, self.every_s) for stream, text in self.lines]
        if self.partial is not None:
            lines.append(FakeLine(self.partial))
        return FakeProcess(
            lines=lines, exit_code=self.exit_code, hang=self.hang, ignore_sigterm=self.ignore_term,
            oom_killed=self.oom,
        )  # fmt: skip


@dataclass
class Harness:
    """A runtime plus the means to give it programs; ``kind`` is ``fake`` or ``docker``."""

    kind: str
    runtime: Runtime
    image: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    programs: dict[str, Program] = field(default_factory=dict)
    _count: itertools.count[int] = field(default_factory=itertools.count)

    def spec(self, program: Program, *, name: str | None = None, image: str | None = None,
             network: str = "none", labels: dict[str, str] | None = None, memory_mib: int = 256) -> ContainerSpec:  # fmt: skip
        key = str(next(self._count))
        self.programs[key] = program
        return ContainerSpec(
            image=image or self.image, argv=("sh", "-c", program.shell()), user="1000:1000",
            tmpfs=(TmpfsSpec(target="/tmp", size="16m"),), memory_bytes=memory_mib * MiB,
            nano_cpus=1_000_000_000, pids_limit=64, network=network, name=name,
            labels={TEST_LABEL: self.run_id, PROGRAM_LABEL: key, **(labels or {})},
        )  # fmt: skip

    def play(self, spec: ContainerSpec) -> FakeProcess:
        """The fake's script: the program the spec was made from."""
        return self.programs[spec.labels[PROGRAM_LABEL]].fake()

    def unique(self, stem: str) -> str:
        return f"{stem}-{self.run_id}"


@pytest.fixture(scope="session")
def base_image(docker_engine: None) -> str:
    """The light base image (built once if missing)."""
    from orchestrator.images import ensure_images

    return ensure_images(Settings(_env_file=None), ["base"])["base"]  # type: ignore[call-arg]


@pytest.fixture(params=["fake", pytest.param("docker", marks=pytest.mark.integration)])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """The same contract on both runtimes; Docker containers/networks of the test are removed after."""
    if request.param == "fake":
        fake = Harness("fake", FakeRuntime(), image="contract:fake")
        fake.runtime = FakeRuntime(fake.play, images={"contract:fake"})
        yield fake
        await fake.runtime.close()
        return
    from orchestrator.runtime.docker import DockerRuntime

    image: str = request.getfixturevalue("base_image")
    runtime = DockerRuntime()
    docker = Harness("docker", runtime, image=image)
    try:
        yield docker
    finally:
        for info in await runtime.find({TEST_LABEL: docker.run_id}):
            await runtime.remove(info.id)
        for stem in ("net", "other"):
            await runtime.remove_network(docker.unique(stem))
        await runtime.close()
