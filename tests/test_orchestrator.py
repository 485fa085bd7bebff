"""The orchestrator example (orchestrator/) is consistent: what `make scale-demo` runs for real.

Cheap checks only (about a second once `.venv-meltano` is there, which tests/test_meltano_project.py
makes): orchestrator/meltano.yml validates against the JSON schema of the pinned Meltano; its
jobs name its own plugins and run the partitions side by side under dagster-meltano; its
settings are tap-sage's own; its streams are incremental (what the second run checks); the
pins agree with the rest of the repository; no secret is written in it. The run itself (Dagster,
PostgreSQL, the sandbox, about 5 minutes) is `make scale-demo`, not part of `make test`.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml

from tap_sage.tap import TapSage
from tests.test_meltano_project import VERSION
from tests.test_meltano_project import meltano as meltano  # the fixture: .venv-meltano

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "orchestrator"


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def project() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((HERE / "meltano.yml").read_text())
    return data


@pytest.fixture(scope="module")
def demo() -> ModuleType:
    sys.path.insert(0, str(HERE))  # scale_demo imports install_venv from its folder
    try:
        return _load(HERE / "scale_demo.py")
    finally:
        sys.path.remove(str(HERE))


def _plugins(project: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in project["plugins"][kind]}


def _resolved(plugins: dict[str, dict[str, Any]], name: str, key: str) -> Any:
    """A plugin's ``key``, following inherit_from (config merged key by key, like Meltano)."""
    plugin = plugins[name]
    parent = plugin.get("inherit_from")
    if key == "config":
        base = _resolved(plugins, parent, key) if parent else {}
        return {**base, **plugin.get("config", {})}
    if key in plugin or not parent:
        return plugin.get(key)
    return _resolved(plugins, parent, key)


def test_meltano_yml_validates_against_the_pinned_meltanos_schema(
    project: dict[str, Any], meltano: Path
) -> None:
    schemas = sorted(meltano.parent.parent.glob("lib/python*/site-packages/meltano/schemas/meltano.schema.json"))  # fmt: skip
    assert schemas, f"no meltano.schema.json in {meltano.parent.parent}"
    validator = jsonschema.Draft202012Validator(json.loads(schemas[0].read_text()))
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(project)]
    assert errors == []
    # the schema does reject a misspelt key (this check can fail)
    broken = {**project, "jobz": []}
    assert list(validator.iter_errors(broken))


def test_requirements_pin_the_meltano_of_the_demo_and_dagster_meltano() -> None:
    pins = dict(
        re.findall(r"^([a-z][a-z0-9_-]*(?:\[[a-z]+\])?)==([0-9.]+)$", (HERE / "requirements.txt").read_text(), re.M)
    )  # fmt: skip
    assert pins.get("meltano[postgres]") == VERSION
    assert {"dagster", "dagster-shell", "dagster-meltano"} <= set(pins)
    assert (HERE / ".venv") != ROOT / ".venv"


def _layers(tasks: list[str]) -> list[list[str]]:
    """dagster-meltano 1.5.5's grouping (job.py): a new layer (run after the previous one)
    starts at a task without "tap-" and after one; the tasks of a layer run side by side."""
    layers: list[list[str]] = []
    previous_tap = False
    for task in tasks:
        tap = "tap-" in task
        if not tap or not previous_tap:
            layers.append([])
        layers[-1].append(task)
        previous_tap = tap
    return layers


def test_layers_follow_dagster_meltano() -> None:
    assert _layers(["tap-a t", "tap-b t"]) == [["tap-a t", "tap-b t"]]
    assert _layers(["tap-a t", "dbt:run", "tap-b t"]) == [["tap-a t"], ["dbt:run"], ["tap-b t"]]


def test_jobs_run_their_units_side_by_side(project: dict[str, Any], demo: ModuleType) -> None:
    """Every task names plugins of this project, and each job is one layer of dagster-meltano:
    its units run at the same time; their state IDs are the ones the demo checks."""
    extractors, loaders = _plugins(project, "extractors"), _plugins(project, "loaders")
    jobs = {j["name"]: j["tasks"] for j in project["jobs"]}
    assert set(jobs) == {"sage-partitions", "sage-write"}
    environment = project["default_environment"]
    assert environment == demo.ENVIRONMENT
    ids = {}
    for name, tasks in jobs.items():
        pairs = [task.split() for task in tasks]
        assert all(len(p) == 2 and p[0] in extractors and p[1] in loaders for p in pairs), pairs
        assert len(_layers(tasks)) == 1, name
        assert len(tasks) >= 2, name
        ids[name] = {f"{environment}:{t}-to-{loader}" for t, loader in pairs}
    assert ids["sage-partitions"] == {demo.state_id(p) for p in demo.PARTITIONS}
    assert ids["sage-write"] == demo.write_ids(
        {f"w{i + 1}": "" for i in range(len(demo.PARTITIONS))}
    )
    # one warehouse schema per partition (two loaders creating one table at once can fail)
    schemas = [_resolved(loaders, t.split()[1], "config")["default_target_schema"] for t in jobs["sage-partitions"]]  # fmt: skip
    assert len(set(schemas)) == len(schemas)
    assert project["schedules"][0]["job"] == "sage-partitions"


def test_write_back_units_share_the_ledger_and_write_one_business_each(
    project: dict[str, Any],
) -> None:
    from target_sage.target import TargetSage

    loaders = _plugins(project, "loaders")
    base = loaders["target-sage"]
    assert {s["name"] for s in base["settings"]} <= set(TargetSage.config_jsonschema["properties"])
    assert base["config"]["ledger_path"] == "${SAGE_SCALE_LEDGER}"
    assert base["config"]["oauth_settings_location"] == "${SAGE_SCALE_DB_URL}"
    units = [n for n in loaders if n.startswith("target-sage--")]
    configs = [_resolved(loaders, n, "config") for n in units]
    assert [c["business_id"] for c in configs] == [
        f"${{SAGE_SCALE_WRITE_BUSINESS_{n.removeprefix('target-sage--w')}}}" for n in units
    ]
    assert len({c["results_path"] for c in configs}) == len(units)
    assert len({c["ledger_path"] for c in configs}) == 1
    source = (HERE / "scale_demo.py").read_text()
    assert 'f"SAGE_SCALE_WRITE_BUSINESS_{u[1:]}"' in source
    assert '"SAGE_SCALE_LEDGER"' in source


def test_partitions_take_their_businesses_from_what_the_demo_sets(
    project: dict[str, Any], demo: ModuleType
) -> None:
    extractors = _plugins(project, "extractors")
    partitions = {n: p for n, p in extractors.items() if n.startswith("tap-sage--")}
    assert set(partitions) == {f"tap-sage--{p}" for p in demo.PARTITIONS}
    variables = set()
    for name, plugin in partitions.items():
        assert plugin["inherit_from"] == "tap-sage"
        value = plugin["config"]["business_ids"]
        found = re.fullmatch(r"\$\{(SAGE_SCALE_PARTITION_[0-9]+)\}", value)
        assert found, (name, value)
        variables.add(found.group(1))
    source = (HERE / "scale_demo.py").read_text()
    assert 'f"SAGE_SCALE_PARTITION_{p[1:]}"' in source
    assert variables == {f"SAGE_SCALE_PARTITION_{p[1:]}" for p in demo.PARTITIONS}


def test_tap_settings_are_tap_sages_own_with_its_kinds(project: dict[str, Any]) -> None:
    known = TapSage.config_jsonschema["properties"]
    tap = _plugins(project, "extractors")["tap-sage"]
    declared = {s["name"]: s for s in tap["settings"]}
    assert set(tap["config"]) <= set(declared) <= set(known)
    root = yaml.safe_load((ROOT / "meltano.yml").read_text())
    generated = {s["name"]: s for s in _plugins(root, "extractors")["tap-sage"]["settings"]}
    for name, setting in declared.items():
        assert setting.get("kind", "string") == generated[name]["kind"], name
        assert setting.get("sensitive", False) >= generated[name].get("sensitive", False), name
    # the database token store: a URL from the environment and the key's variable
    assert tap["config"]["oauth_settings_location"] == "${SAGE_SCALE_DB_URL}"
    assert tap["config"]["oauth_settings_key"].startswith("env:")
    assert "postgres" in tap["pip_url"]
    assert "refresh_token" not in tap["config"]
    assert tap["config"]["initiate_oauth"] == "GETANDREFRESH"


def test_selected_streams_are_incremental_and_the_ones_the_demo_checks(
    project: dict[str, Any], demo: ModuleType
) -> None:
    tap = _plugins(project, "extractors")["tap-sage"]
    selected = [s.removesuffix(".*") for s in tap["select"]]
    assert selected == list(demo.STREAMS)
    streams = {s.name: s for s in TapSage(config={}, validate_config=False).discover_streams()}
    for name in selected:
        assert name in streams, name
        assert streams[name].replication_key == "updated_at", name


def test_target_postgres_is_the_pin_the_warehouse_tests_use(project: dict[str, Any]) -> None:
    loader_venvs = _load(ROOT / "scripts" / "loader_venvs.py")
    (pin,) = loader_venvs.LOADERS["target-postgres"][0]
    assert _plugins(project, "loaders")["target-postgres"]["pip_url"] == pin


def test_no_secret_is_written_in_the_example(project: dict[str, Any]) -> None:
    """Every sensitive setting's value comes from the environment."""
    for kind in ("extractors", "loaders"):
        for plugin in project["plugins"][kind]:
            sensitive = {s["name"] for s in plugin.get("settings", []) if s.get("sensitive")}
            for name in sensitive & set(plugin.get("config", {})):
                assert re.fullmatch(r"\$\{[A-Z_]+\}", plugin["config"][name]), (
                    plugin["name"],
                    name,
                )


def test_dagster_definitions_load_the_meltano_project() -> None:
    """definitions.py (not importable without Dagster) hands this folder to dagster-meltano."""
    tree = ast.parse((HERE / "definitions.py").read_text())
    calls = {
        n.func.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    }
    assert {"load_jobs_from_meltano_project", "Definitions"} <= calls
    run_config = yaml.safe_load((HERE / "run_config.yaml").read_text())
    assert run_config["execution"]["config"]["multiprocess"]["max_concurrent"] >= 2
