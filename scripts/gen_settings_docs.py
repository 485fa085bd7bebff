"""Regenerate the parts of README.md and meltano.yml that restate what the executables say,
and the plugin definitions of hub/ (for `meltano add --from-ref` in a user's own project).

Sources of truth:
- ``tap-sage --about --format json`` and ``target-sage --about --format json``: every setting
  (name, type, default, description, secret or not) and the capabilities;
- ``tap-sage --discover``: every stream with its key, replication method and replication key;
- the resource catalogue (``tap_sage.sage.catalogue``): which resources report deletions and
  which ones target-sage can write;
- target-sage's Execute procedures (``target_sage.procedures``, which ``--about`` lists too).

Generated text lives between marker lines, so everything around it stays hand-written:

    <!-- BEGIN GENERATED: tap-sage settings -->      (README.md)
    # BEGIN GENERATED: tap-sage settings             (meltano.yml)

The files of hub/ are generated whole (Meltano copies a definition's comments into the
user's meltano.yml, so they carry no markers): the settings from ``--about``, the commands
and settings groups from this repository's meltano.yml.

Usage:
    python scripts/gen_settings_docs.py           # rewrite the generated blocks in place
    python scripts/gen_settings_docs.py --check   # exit 1 (and say where) if anything drifted

``tests/test_readme.py`` runs the check, so the README cannot drift from ``--about``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MELTANO_YML = ROOT / "meltano.yml"
#: Plugin definitions for `meltano add --from-ref` in a user's own project, one per executable.
HUB = ROOT / "hub"
#: Where the definitions' pip_url comes from: a git URL or a local path of this package.
PIP_URL_VARIABLE = "SAGE_SINGER_PIP_URL"
EXECUTABLES = ("tap-sage", "target-sage")

# Settings whose meaning belongs to the Singer SDK rather than to this project; the README
# lists them in a table of their own so that the project's settings stay readable.
SDK_SETTINGS = frozenset(
    {
        "stream_maps",
        "stream_map_config",
        "faker_config",
        "flattening_enabled",
        "flattening_max_depth",
        "flattening_max_key_length",
        "flattening_separator",
        "batch_config",
        "batch_size_rows",
        "load_method",
        "validate_records",
        "add_record_metadata",
        "process_activate_version_messages",
        "hard_delete",
    }
)


# --------------------------------------------------------------------------------------------
# Reading the executables


def _bin(name: str) -> str:
    """The executable in this interpreter's environment, else on PATH."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def _run(args: list[str], cwd: Path | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAP_SAGE_", "TARGET_SAGE_"))}
    done = subprocess.run(
        args, capture_output=True, text=True, check=False, cwd=cwd, env=env, timeout=120
    )
    if done.returncode != 0:
        raise SystemExit(f"`{' '.join(args)}` failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout


@cache
def about(executable: str) -> dict[str, Any]:
    """``<executable> --about --format json``, parsed."""
    data: dict[str, Any] = json.loads(_run([_bin(executable), "--about", "--format", "json"]))
    return data


@cache
def discovered_catalog() -> dict[str, Any]:
    """``tap-sage --discover`` with a config that makes no network call (streams are data)."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.json"
        config.write_text(
            json.dumps(
                {
                    "initiate_oauth": "OFF",
                    "access_token": "not-used-by-discovery",
                    "oauth_settings_location": str(Path(tmp) / "tokens.json"),
                }
            )
        )
        catalog: dict[str, Any] = json.loads(
            _run([_bin("tap-sage"), "--config", str(config), "--discover"], cwd=Path(tmp))
        )
    return catalog


# --------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class Setting:
    """One setting of an executable, as its ``--about`` JSON schema describes it."""

    name: str
    schema: Mapping[str, Any]
    required: bool

    @property
    def types(self) -> list[str]:
        raw = self.schema.get("type")
        if raw is None and "anyOf" in self.schema:
            raw = [t for option in self.schema["anyOf"] for t in _as_list(option.get("type"))]
        return [t for t in _as_list(raw) if t != "null"]

    @property
    def sensitive(self) -> bool:
        return bool(self.schema.get("secret") or self.schema.get("writeOnly"))

    @property
    def enum(self) -> list[Any]:
        values = self.schema.get("enum") or []
        return [v for v in values if v is not None]

    @property
    def kind(self) -> str:
        """The Meltano setting kind (never ``password``: secrets are ``sensitive: true``)."""
        types = self.types
        if self.enum:
            return "options"
        if "boolean" in types:
            return "boolean"
        if "integer" in types:
            return "integer"
        if "number" in types:
            return "decimal"
        if "object" in types:
            return "object"
        if "array" in types:
            return "array"
        if self.schema.get("format") in {"date-time", "date"}:
            return "date_iso8601"
        return "string"

    @property
    def type_label(self) -> str:
        if self.enum:
            return " | ".join(f"`{v}`" for v in self.enum)
        if self.kind == "array":
            items = _as_list((self.schema.get("items") or {}).get("type"))
            inner = next((t for t in items if t != "null"), "")
            return f"array of {inner}" if inner else "array"
        if self.kind == "date_iso8601":
            return "date-time"
        return "/".join(self.types) or "any"

    @property
    def description(self) -> str:
        text = str(self.schema.get("description") or self.schema.get("title") or "")
        return " ".join(text.split())

    @property
    def label(self) -> str:
        title = self.schema.get("title")
        if title:
            return str(title)
        words = self.name.replace("_", " ").split()
        return " ".join(_LABEL_WORDS.get(w, w.capitalize()) for w in words)


_LABEL_WORDS = {
    "id": "ID",
    "ids": "IDs",
    "url": "URL",
    "oauth": "OAuth",
    "ca": "CA",
    "max": "Max",
}


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def settings(executable: str) -> list[Setting]:
    """Every setting of an executable, in ``--about`` order."""
    schema = about(executable)["settings"]
    required = set(schema.get("required") or [])
    return [
        Setting(name, prop, name in required) for name, prop in schema.get("properties", {}).items()
    ]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default_cell(setting: Setting) -> str:
    if "default" not in setting.schema:
        return ""
    value = setting.schema["default"]
    if value is None:
        return ""
    return f"`{json.dumps(value)}`"


def settings_table(executable: str, *, sdk: bool) -> str:
    """Markdown table of the project's own settings (``sdk=False``) or the SDK's ones."""
    rows = [
        "| Setting | Type | Required | Default | Description |",
        "| --- | --- | --- | --- | --- |",
    ]
    for s in settings(executable):
        if (s.name in SDK_SETTINGS) != sdk:
            continue
        name = f"`{s.name}`" + (" (secret)" if s.sensitive else "")
        rows.append(
            "| "
            + " | ".join(
                [
                    name,
                    _md_cell(s.type_label),
                    "yes" if s.required else "",
                    _md_cell(_default_cell(s)),
                    _md_cell(s.description),
                ]
            )
            + " |"
        )
    return "\n".join(rows)


def _yaml_str(value: Any) -> str:
    """A YAML scalar that no YAML 1.1 reader mistakes (JSON strings are valid YAML)."""
    return json.dumps(value, ensure_ascii=False)


def meltano_settings(executable: str, indent: int = 4) -> str:
    """The ``capabilities:`` and ``settings:`` keys of a meltano.yml plugin entry."""
    pad = " " * indent
    caps = about(executable).get("capabilities") or []
    lines = [f"{pad}capabilities:"]
    lines += [f"{pad}- {_yaml_str(c)}" for c in caps]
    lines.append(f"{pad}settings:")
    for s in settings(executable):
        lines.append(f"{pad}- name: {s.name}")
        lines.append(f"{pad}  label: {_yaml_str(s.label)}")
        lines.append(f"{pad}  kind: {s.kind}")
        if s.kind == "options":
            lines.append(f"{pad}  options:")
            for value in s.enum:
                lines.append(f"{pad}  - label: {_yaml_str(str(value))}")
                lines.append(f"{pad}    value: {_yaml_str(value)}")
        if s.sensitive:
            lines.append(f"{pad}  sensitive: true")
        if s.description:
            lines.append(f"{pad}  description: {_yaml_str(s.description)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Plugin definitions (hub/)

_HUB_ABOUT = {
    "tap-sage": (
        "extractor",
        "Reads every Sage Accounting (API v3.1) list and settings resource, for one or many "
        "businesses, incrementally, deletions included.",
    ),
    "target-sage": (
        "loader",
        "Writes Singer records into Sage Accounting (API v3.1): creates, updates, deletes, "
        "voids and Execute procedures, exactly once.",
    ),
}


def _project_plugin(executable: str) -> dict[str, Any]:
    """The executable's plugin entry in this repository's meltano.yml."""
    import yaml

    project = yaml.safe_load(MELTANO_YML.read_text(encoding="utf-8"))
    for plugins in project["plugins"].values():
        for plugin in plugins:
            if plugin["name"] == executable:
                found: dict[str, Any] = plugin
                return found
    raise SystemExit(f"meltano.yml has no plugin {executable}")


def hub_path(executable: str) -> Path:
    """The plugin definition file of an executable."""
    return HUB / f"{executable}.yml"


def hub_definition(executable: str) -> str:
    """The whole text of hub/<executable>.yml."""
    kind, description = _HUB_ABOUT[executable]
    plugin = _project_plugin(executable)
    lines = [
        f"# {executable}: a plugin definition for your own Meltano project (Meltano 4).",
        "#",
        f"#   meltano add --plugin-type {kind} {executable} --from-ref <this file's path or URL>",
        "#",
        f"# pip_url comes from {PIP_URL_VARIABLE} (your project's .env or the environment), so",
        "# this one file serves every way of installing the package: a git URL",
        "# (git+https://<git host>/<owner>/tap-sage.git@<tag>) or a local path (/src/tap-sage,",
        '# or "-e /src/tap-sage" while you change it). tap-sage and target-sage are both in it.',
        '# README.md: "Add tap-sage and target-sage to your Meltano project".',
        "#",
        "# Generated by `make docs` (scripts/gen_settings_docs.py) from the executable's --about",
        "# and this repository's meltano.yml: edit those, not this file.",
        f"name: {executable}",
        f"namespace: {plugin['namespace']}",
        f"label: {_yaml_str(f'Sage Business Cloud Accounting ({executable})')}",
        f"description: {_yaml_str(description)}",
        f"pip_url: ${{{PIP_URL_VARIABLE}}}",
        f"executable: {plugin['executable']}",
        "settings_group_validation:",
    ]
    lines += [f"- {json.dumps(group)}" for group in plugin["settings_group_validation"]]
    lines.append("commands:")
    for name, command in plugin["commands"].items():
        lines.append(f"  {name}:")
        for key in ("executable", "args", "description"):
            lines.append(f"    {key}: {_yaml_str(command[key])}")
    lines.append(meltano_settings(executable, indent=0))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Streams


def _root_metadata(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    for item in entry.get("metadata", []):
        if not item.get("breadcrumb"):
            return item.get("metadata", {})  # type: ignore[no-any-return]
    return {}


def streams_table() -> str:
    """Markdown table of every stream tap-sage discovers."""
    from tap_sage.sage.catalogue import resources as catalogue_resources

    resources = catalogue_resources()
    rows = [
        "| Stream | Key | Replication | Replication key | Deletions | target-sage writes |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    streams = sorted(
        discovered_catalog()["streams"], key=lambda e: e.get("tap_stream_id") or e["stream"]
    )
    for entry in streams:
        name = entry.get("tap_stream_id") or entry["stream"]
        meta = _root_metadata(entry)
        keys = entry.get("key_properties") or meta.get("table-key-properties") or []
        method = entry.get("replication_method") or meta.get("forced-replication-method") or ""
        rkey = entry.get("replication_key") or ""
        if not rkey:
            valid = meta.get("valid-replication-keys") or []
            rkey = valid[0] if valid and method == "INCREMENTAL" else ""
        resource = resources.get(name)
        deletions = ""
        writes = ""
        if resource is not None:
            deletions = "yes" if resource.deletions else ""
            verbs = [
                verb
                for verb, allowed in (
                    ("create", resource.create),
                    ("update", resource.update),
                    ("delete", resource.delete),
                    ("void", resource.void),
                )
                if allowed
            ]
            writes = ", ".join(verbs)
        rows.append(
            f"| `{name}` | {', '.join(keys)} | {method} | {f'`{rkey}`' if rkey else ''} "
            f"| {deletions} | {writes} |"
        )
    return "\n".join(rows)


# --------------------------------------------------------------------------------------------
# Execute procedures


def procedures_table() -> str:
    """Markdown table of target-sage's Execute procedures (the code that ``--about`` lists)."""
    from target_sage.procedures import PROCEDURES

    rows = [
        "| Stream (procedure) | What it does | Inputs | Outputs |",
        "| --- | --- | --- | --- |",
    ]
    for name, proc in sorted(PROCEDURES.items()):
        inputs = "; ".join(
            f"`{i.name}` ({i.type}{', required' if i.required else ''}): {i.description}"
            for i in proc.inputs
        )
        rows.append(
            f"| `{name}` | {_md_cell(proc.summary)} | {_md_cell(inputs)} | {_md_cell(proc.outputs)} |"
        )
    return "\n".join(rows)


# --------------------------------------------------------------------------------------------
# Blocks and markers


@dataclass(frozen=True)
class Block:
    """One generated block: which file, which marker, how to render it."""

    path: Path
    name: str
    render: Callable[[], str]

    @property
    def begin(self) -> str:
        if self.path.suffix == ".md":
            return f"<!-- BEGIN GENERATED: {self.name} -->"
        return f"# BEGIN GENERATED: {self.name}"

    @property
    def end(self) -> str:
        if self.path.suffix == ".md":
            return f"<!-- END GENERATED: {self.name} -->"
        return f"# END GENERATED: {self.name}"


def blocks() -> list[Block]:
    """Every generated block in the repository."""
    out: list[Block] = []
    for exe in EXECUTABLES:
        out.append(Block(README, f"{exe} settings", lambda e=exe: settings_table(e, sdk=False)))
        out.append(Block(README, f"{exe} sdk settings", lambda e=exe: settings_table(e, sdk=True)))
        out.append(Block(MELTANO_YML, f"{exe} settings", lambda e=exe: meltano_settings(e)))
    out.append(Block(README, "tap-sage streams", streams_table))
    out.append(Block(README, "target-sage procedures", procedures_table))
    return out


def _block_pattern(block: Block) -> re.Pattern[str]:
    """Groups: the BEGIN line, the generated text, the END line."""
    return re.compile(
        rf"(^[ \t]*{re.escape(block.begin)}[ \t]*\n)(.*?)(^[ \t]*{re.escape(block.end)}[ \t]*$)",
        re.DOTALL | re.MULTILINE,
    )


def _find_block(text: str, block: Block) -> re.Match[str]:
    found = _block_pattern(block).search(text)
    if not found:
        raise SystemExit(f"{block.path.name}: markers for {block.name!r} not found")
    return found


def replace_block(text: str, block: Block, body: str) -> str:
    """``text`` with the lines between ``block``'s markers replaced by ``body``."""
    found = _find_block(text, block)
    return text[: found.start(2)] + body + "\n" + text[found.end(2) :]


def current_block(text: str, block: Block) -> str:
    """The text now between ``block``'s markers."""
    return _find_block(text, block).group(2).rstrip("\n")


def drifted() -> list[str]:
    """Names of the blocks whose committed text differs from what the executables say."""
    stale = [
        f"hub/{exe}.yml"
        for exe in EXECUTABLES
        if not hub_path(exe).exists() or hub_path(exe).read_text() != hub_definition(exe)
    ]
    for block in blocks():
        if current_block(block.path.read_text(), block) != block.render():
            stale.append(f"{block.path.name}: {block.name}")
    return stale


def write_all() -> list[str]:
    """Rewrite every block in place; return the ones that changed."""
    changed = []
    texts: dict[Path, str] = {}
    for block in blocks():
        text = texts.get(block.path) or block.path.read_text()
        new = replace_block(text, block, block.render())
        if new != text:
            changed.append(f"{block.path.name}: {block.name}")
        texts[block.path] = new
    for path, text in texts.items():
        if path.read_text() != text:
            path.write_text(text)
    for exe in EXECUTABLES:
        path, text = hub_path(exe), hub_definition(exe)
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
            changed.append(f"hub/{exe}.yml")
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if a block drifted")
    args = parser.parse_args(argv)
    if args.check:
        stale = drifted()
        for name in stale:
            print(f"drifted: {name}", file=sys.stderr)
        if stale:
            print("run: make docs", file=sys.stderr)
        return 1 if stale else 0
    for name in write_all():
        print(f"updated: {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
