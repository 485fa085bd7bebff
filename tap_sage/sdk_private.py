"""Every private singer-sdk name tap-sage and target-sage rely on, in one place.

The SDK's public interface does not carry the bookmark and STATE guarantees of this project:
these names do. Each one is listed in ``PRIVATE_NAMES`` with what we rely on (the parameters of a
method or function; an attribute's presence) and where. ``tests/test_sdk_private.py`` checks
every entry against the installed SDK, and that each override of ours still takes the SDK's
parameters, so that an SDK release that renames, removes or re-signs one fails with a message
naming it, instead of silently breaking a bookmark or a STATE guarantee (the ``~=0.54.9`` pin
is the other guard).

Functions and attributes are reached through this module (``pop_deselected_record_properties``,
``utc_now``, ``active_sinks``, ``env_var_config``, ``latest_state``, ``stream_version``,
``raw_config``, ``write_starting_replication_value``); methods we override keep the SDK's names
in our classes (they must), and are listed here with the classes that override them.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from singer_sdk.helpers._catalog import pop_deselected_record_properties
from singer_sdk.helpers._util import utc_now

__all__ = [
    "PRIVATE_NAMES",
    "PrivateName",
    "active_sinks",
    "env_var_config",
    "latest_state",
    "pop_deselected_record_properties",
    "problems",
    "raw_config",
    "stream_version",
    "utc_now",
    "write_starting_replication_value",
]


@dataclass(frozen=True)
class PrivateName:
    """One private name: ``owner`` (``module`` or ``module:Class``), ``name``, and the
    parameters we call or override it with (``None``: an attribute, only its presence)."""

    owner: str
    name: str
    parameters: tuple[str, ...] | None
    why: str
    #: Our classes that override it (``module:Class``): their parameters must be the SDK's.
    overridden_by: tuple[str, ...] = ()
    #: An instance attribute set in the owner's ``__init__`` (not on the class itself).
    instance: bool = False

    @property
    def label(self) -> str:
        """``singer_sdk.Stream._write_state_message``: how messages name it."""
        return f"{self.owner.replace(':', '.')}.{self.name}"


PRIVATE_NAMES: tuple[PrivateName, ...] = (
    PrivateName(
        "singer_sdk:Stream",
        "_generate_record_messages",
        ("self", "record"),
        "tap-sage builds the RECORD messages without the SDK's per-record costs "
        "(tap_sage/streams.py)",
        ("tap_sage.streams:SageStream",),
    ),
    PrivateName(
        "singer_sdk:Stream",
        "_stream_version",
        None,
        "the RECORD messages tap-sage builds carry the stream's version (tap_sage/streams.py)",
        instance=True,
    ),
    PrivateName(
        "singer_sdk:Stream",
        "_increment_stream_state",
        ("self", "latest_record", "context"),
        "bookmarks never come from the records seen: tap_sage.sync sets them once a read is "
        "complete (tap_sage/bookmarks.py)",
        ("tap_sage.bookmarks:StreamState",),
    ),
    PrivateName(
        "singer_sdk:Stream",
        "_write_state_message",
        ("self",),
        "tap-sage writes STATE when a read finishes or makes progress, at the cadence of "
        "tap_sage/state.py, so a killed sync resumes from there (tap_sage/bookmarks.py)",
        ("tap_sage.bookmarks:StreamState",),
    ),
    PrivateName(
        "singer_sdk:Stream",
        "_write_starting_replication_value",
        ("self", "context"),
        "a partition read ahead starts from the value the SDK writes at the partition's turn, "
        "written early and then undone (tap_sage/reads.py, read_start)",
    ),
    PrivateName(
        "singer_sdk:Tap",
        "_validate_config",
        ("self", "raise_errors"),
        "the SDK's JSON Schema check of the config, with secret values kept out of its "
        "messages (tap_sage/tap.py)",
        ("tap_sage.tap:TapSage",),
    ),
    PrivateName(
        "singer_sdk.plugin_base:PluginBase",
        "_config",
        None,
        "the secret values to redact from the SDK's config messages (tap_sage/tap.py)",
        instance=True,
    ),
    PrivateName(
        "singer_sdk:Target",
        "_process_schema_message",
        ("self", "message_dict"),
        "target-sage keeps each stream's SCHEMA message for the dead letter, and skips "
        "Meltano's probe stream (target.py)",
        ("target_sage.target:TargetSage",),
    ),
    PrivateName(
        "singer_sdk:Target",
        "_process_record_message",
        ("self", "message_dict"),
        "target-sage reports a bad record by its input line (target.py)",
        ("target_sage.target:TargetSage",),
    ),
    PrivateName(
        "singer_sdk:Target",
        "_process_state_message",
        ("self", "message_dict"),
        "STATE is passed on only once every record before it is applied (target.py)",
        ("target_sage.target:TargetSage",),
    ),
    PrivateName(
        "singer_sdk:Target",
        "_latest_state",
        None,
        "the last STATE received, emitted when nothing is left to drain (target.py)",
        instance=True,
    ),
    PrivateName(
        "singer_sdk:Target",
        "_write_state_message",
        ("self", "state"),
        "target-sage never emits the same STATE twice (target.py)",
        ("target_sage.target:TargetSage",),
    ),
    PrivateName(
        "singer_sdk:Target",
        "_sinks_active",
        None,
        "the sink of a stream, to drain it and to find its buffered records (target.py)",
        instance=True,
    ),
    PrivateName(
        "singer_sdk:Target",
        "_env_var_config",
        None,
        "`target-sage --test --config ENV` reads the TARGET_SAGE_* variables (target.py)",
    ),
    PrivateName(
        "singer_sdk.helpers._catalog",
        "pop_deselected_record_properties",
        ("record", "schema", "mask", "breadcrumb"),
        "a record carries only the selected properties (tap_sage/streams.py)",
    ),
    PrivateName(
        "singer_sdk.helpers._util",
        "utc_now",
        (),
        "RECORD time_extracted, as the SDK writes it (tap_sage/streams.py)",
    ),
)


def active_sinks(target: Any) -> Mapping[str, Any]:
    """The target's sinks by stream name (``Target._sinks_active``)."""
    sinks: Mapping[str, Any] = target._sinks_active
    return sinks


def env_var_config(target_class: Any) -> dict[str, Any]:
    """The settings a target class reads from its environment (``Target._env_var_config``)."""
    return dict(target_class._env_var_config)


_MISSING = object()


def write_starting_replication_value(stream: Any, context: Any) -> None:
    """Put the partition's starting bookmark in its state
    (``Stream._write_starting_replication_value``)."""
    stream._write_starting_replication_value(context)


def latest_state(target: Any) -> dict[str, Any] | None:
    """The last STATE the target received (``Target._latest_state``)."""
    state: dict[str, Any] | None = target._latest_state
    return state


def stream_version(stream: Any) -> int | None:
    """The version the SDK puts on a stream's RECORD messages (``Stream._stream_version``)."""
    version: int | None = stream._stream_version
    return version


def raw_config(plugin: Any) -> dict[str, Any]:
    """The plugin's config as given, before the SDK's checks (``PluginBase._config``)."""
    config: dict[str, Any] = plugin._config
    return config


def _resolve(spec: str) -> Any:
    module, _, qualname = spec.partition(":")
    found: Any = importlib.import_module(module)
    for part in qualname.split(".") if qualname else ():
        found = getattr(found, part)
    return found


def _parameters(func: Any) -> tuple[str, ...]:
    return tuple(inspect.signature(func).parameters)


def _check(entry: PrivateName) -> list[str]:
    owner = _resolve(entry.owner)
    if entry.instance:
        init = getattr(owner, "__init__", None)
        code = getattr(init, "__code__", None)
        if code is None or entry.name not in code.co_names:
            return [f"{entry.label}: {entry.owner}.__init__ no longer sets it ({entry.why})"]
        return []
    if inspect.getattr_static(owner, entry.name, _MISSING) is _MISSING:
        return [f"{entry.label} is gone from the installed singer-sdk ({entry.why})"]
    if entry.parameters is None:
        return []
    found = _parameters(inspect.getattr_static(owner, entry.name))
    if found != entry.parameters:
        return [
            f"{entry.label} now takes {found}, not {entry.parameters} ({entry.why}): "
            "check the SDK's change and our use of it"
        ]
    wrong = []
    for spec in entry.overridden_by:
        ours = _parameters(inspect.getattr_static(_resolve(spec), entry.name))
        if ours != found:
            wrong.append(
                f"{spec}.{entry.name} takes {ours}, but {entry.label} takes {found}: the "
                "override no longer matches the SDK's method"
            )
    return wrong


def problems() -> list[str]:
    """What changed in the installed SDK among the names above (empty: nothing)."""
    found: list[str] = []
    for entry in PRIVATE_NAMES:
        try:
            found.extend(_check(entry))
        except (ImportError, AttributeError) as exc:
            found.append(f"{entry.label}: cannot be looked up ({exc}) ({entry.why})")
    return found
