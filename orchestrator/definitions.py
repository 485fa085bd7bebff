"""Dagster definitions of the orchestrator example: the Meltano jobs and schedules of meltano.yml.

dagster-meltano reads them with ``meltano job list`` and ``meltano schedule list`` (so
``meltano`` must be on the PATH, and Meltano's system database reachable) and makes one Dagster
job per Meltano job, with one op per task running ``meltano run <task> --force``. Consecutive
tasks that start with a tap share one layer, so the partitions of ``sage-partitions`` run side
by side, up to the executor's ``max_concurrent`` (run_config.yaml).

    dagster job execute -f orchestrator/definitions.py -j sage_partitions -c orchestrator/run_config.yaml
    dagster dev -f orchestrator/definitions.py     # the UI, the schedule turned on

One unit must never run twice at once (two runs of one state ID): on a deployment, give each
job a run queue limit of 1 (``tag_concurrency_limits`` on ``dagster/job_name`` in
dagster.yaml), as docs/scale.md says.
"""

from __future__ import annotations

from pathlib import Path

from dagster import Definitions, JobDefinition, ScheduleDefinition
from dagster_meltano import load_jobs_from_meltano_project

PROJECT = Path(__file__).resolve().parent

_loaded = load_jobs_from_meltano_project(str(PROJECT))

defs = Definitions(
    jobs=[j for j in _loaded if isinstance(j, JobDefinition)],
    schedules=[s for s in _loaded if isinstance(s, ScheduleDefinition)],
)
