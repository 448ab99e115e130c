"""Prefect flow runs left RUNNING by a killed process: found by their owner, ended CRASHED.

``cnnlstm run`` tags its flow runs (the pipeline and its sub-flows) with its owner, the same
identity as the MLflow runs carry (`cnnlstm.liveness.Owner`): ``cnnlstm.owned`` plus
``cnnlstm.owner.host=...``, ``cnnlstm.owner.pid=...``, ``cnnlstm.owner.start=...``,
``cnnlstm.owner.boot_id=...``, ``cnnlstm.owner.pidns=...``. `sweep_flow_runs` reads the
RUNNING/PENDING flow runs tagged ``cnnlstm.owned``; those whose owner is gone on this machine
are set CRASHED (with the reason as the state message), and so are their RUNNING/PENDING task
runs. A flow run whose owner is on another machine is reported, not touched: Prefect's own
answer there is flow-run heartbeats (``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``) and a "zombie
flow" automation on the server. Flow runs of deployments (started by workers) carry no owner
tag: their worker reports a crashed run itself.
"""

from __future__ import annotations

from typing import Any

from cnnlstm.liveness import PREFIX, Finding, Owner, judge

OWNED = "cnnlstm.owned"


def owner_flow_tags(owner: Owner | None = None) -> list[str]:
    """The tags of a flow run this process owns."""
    owner = owner or Owner.current()
    return [OWNED] + [f"{k}={v}" for k, v in owner.tags().items()]


def owner_of(tags: list[str]) -> Owner | None:
    kv = dict(t.split("=", 1) for t in tags if t.startswith(PREFIX) and "=" in t)
    return Owner.from_tags(kv)


def sweep_flow_runs(fix: bool = True, client: Any = None) -> list[Finding]:
    """Flow runs tagged as ours and left RUNNING/PENDING: CRASHED when the owner is gone."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    live = [StateType.RUNNING, StateType.PENDING]
    me = Owner.current()
    found: list[Finding] = []
    with client or get_client(sync_client=True) as c:
        flt = FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=live)),
            tags=FlowRunFilterTags(all_=[OWNED]),
        )
        runs: list[Any] = []
        while True:  # pages of 200, the server's maximum
            page = c.read_flow_runs(flow_run_filter=flt, limit=200, offset=len(runs))
            runs += page
            if len(page) < 200:
                break
        for run in runs:
            v = judge(owner_of(run.tags), None, me=me)
            f = Finding("prefect flow run", str(run.id), run.name, v.state, v.reason)
            if v.state == "dead" and fix:
                c.set_flow_run_state(run.id, Crashed(message=v.reason), force=True)
                tasks = c.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])),
                    task_run_filter=TaskRunFilter(
                        state=TaskRunFilterState(type=TaskRunFilterStateType(any_=live))
                    ),
                )
                for t in tasks:
                    c.set_task_run_state(t.id, Crashed(message=v.reason), force=True)
                f.action = "marked CRASHED" + (f" (and {len(tasks)} task runs)" if tasks else "")
            found.append(f)
    return found
