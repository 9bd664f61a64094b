"""The ``Runtime`` contract on ``KubernetesRuntime``, against ``FakeKubeApi`` (no cluster here).

Every test of ``test_runtime_contract`` runs here too, on a ``harness`` whose runtime is a
``KubernetesRuntime`` talking to the fake API server through the real ``kubernetes`` client, with
the same programs (the fake kubelet plays them). The server splits stdout and stderr
(``split_log_streams``), as a cluster with ``PodLogsQuerySplitStreams`` does.

One test cannot apply, and is replaced by what Kubernetes honestly does instead:
``pause`` (Kubernetes cannot freeze a pod) -> ``test_pause_is_refused_and_the_worker_runs_on``.
A second reader after ``stop`` is also different (the pod and its output are deleted):
``test_a_stopped_pod_keeps_its_exit_but_not_its_output``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import KubernetesSettings
from orchestrator.errors import ContainerNotFound, RuntimeFailure
from orchestrator.runtime.kubernetes import KubernetesRuntime
from tests.contract import test_runtime_contract as contract
from tests.contract.conftest import PROGRAM_LABEL, Harness, Program
from tests.support.fake_kube_api import FakeKubeApi

IMAGE = "contract:kube"
# Contract tests that cannot hold on Kubernetes, and the test here that says what holds instead.
NOT_ON_KUBERNETES = {
    "test_pause_holds_the_output_and_unpause_resumes_it": "test_pause_is_refused_and_the_worker_runs_on",
}

globals().update(
    {
        name: test
        for name, test in vars(contract).items()
        if name.startswith("test_") and name not in NOT_ON_KUBERNETES
    }
)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    """The contract's harness, on ``KubernetesRuntime`` and a fake API server (overrides the conftest's)."""
    programs: dict[str, Program] = {}

    def play(pod: dict[str, Any]) -> Any:
        return programs[pod["metadata"]["labels"][PROGRAM_LABEL]].fake()

    async with FakeKubeApi(play, images={IMAGE}, split_streams=True) as api:
        config = KubernetesSettings(
            kubeconfig=api.kubeconfig(tmp_path), node_pids_limit=64, network_policy_enforced=True,
            split_log_streams=True, poll_interval_s=0.02, start_timeout_s=10,
        )  # fmt: skip
        runtime = KubernetesRuntime(config, workspace_root=tmp_path)
        kube = Harness("kubernetes", runtime, image=IMAGE)
        kube.programs = programs
        try:
            yield kube
        finally:
            await runtime.close()


async def test_pause_is_refused_and_the_worker_runs_on(harness: Harness) -> None:
    """Kubernetes cannot freeze a pod: ``pause`` raises ``RuntimeFailure`` (so the review policy stops
    the worker instead, seeing ``supports_pause`` False), and the pod runs on to its end untouched."""
    program = Program(lines=tuple(("stdout", f"tick{i}") for i in range(4)), every_s=0.05)
    container_id = await harness.runtime.start(harness.spec(program))
    with pytest.raises(RuntimeFailure, match="cannot pause"):
        await harness.runtime.pause(container_id)
    with pytest.raises(RuntimeFailure, match="never pauses"):
        await harness.runtime.unpause(container_id)
    lines = [line.text async for line in harness.runtime.stream(container_id)]
    assert KubernetesRuntime.supports_pause is False
    assert [f"tick{i}" for i in range(4)] == lines
    assert (await harness.runtime.wait(container_id, timeout_s=10)).reason == "finished"


async def test_a_stopped_pod_keeps_its_exit_but_not_its_output(harness: Harness) -> None:
    """``stop`` deletes the pod: ``wait``, ``inspect`` and ``find`` still answer from what this
    process saw, but a new reader gets ``ContainerNotFound`` instead of the lines (read them live)."""
    container_id = await harness.runtime.start(harness.spec(Program(lines=(("stdout", "up"),), hang=True)))
    await harness.runtime.stop(container_id, grace_s=1)
    exit_info = await harness.runtime.wait(container_id, timeout_s=10)
    found = await harness.runtime.find({contract.TEST_LABEL: harness.run_id})
    assert (exit_info.exit_code, exit_info.reason) == (143, "stopped")
    assert [(container_id, "exited", 143)] == [(i.id, i.status, i.exit_code) for i in found]
    with pytest.raises(ContainerNotFound, match="its output with it"):
        [line async for line in harness.runtime.stream(container_id)]
    await harness.runtime.remove(container_id)
    assert await harness.runtime.find({contract.TEST_LABEL: harness.run_id}) == []
