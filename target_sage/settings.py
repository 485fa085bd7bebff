"""target-sage's own settings (the connection settings come from ``tap_sage.sage.settings``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tap_sage.sage.errors import SageConfigError
from tap_sage.sage.settings import ConnectionSettings
from target_sage.routing import check_stream_resources

OPERATIONS = ("create", "update", "upsert", "delete")
ON_ERROR = ("fail", "continue")

TARGET_PROPERTIES: dict[str, Any] = {
    "business_id": {
        "type": ["string", "null"],
        "description": "Sage business to write to (X-Business). Default: the connection's lead "
        "business.",
    },
    "stream_resources": {
        "type": ["object", "null"],
        "additionalProperties": {"type": "string"},
        "description": "Stream name -> Sage resource or Execute procedure, for streams not named "
        'after one, e.g. {"customers": "contacts"}.',
    },
    "operations": {
        "type": ["object", "null"],
        "additionalProperties": {"type": "string", "enum": list(OPERATIONS)},
        "description": "Stream -> create | update | upsert | delete, forcing the operation of "
        "every record of that stream. Default upsert: update when the Sage id is known (ledger or "
        "`sage_id_field`), else create; a record with `_sdc_deleted_at` is deleted (voided for "
        "sales invoices, credit notes and corrective invoices).",
    },
    "references": {
        "type": ["object", "null"],
        "additionalProperties": {"type": "object", "additionalProperties": {"type": "string"}},
        "description": "Reference resolution: stream -> {field: other stream}. The field's value "
        "is a source key of the other stream and is replaced by the Sage id the ledger holds for "
        'it, e.g. {"invoices": {"contact_id": "customers", "invoice_lines.product_id": '
        '"items"}}. A dotted field walks into objects and lists.',
    },
    "sage_id_field": {
        "type": "string",
        "default": "sage_id",
        "description": "Record field that may carry the Sage id of the record (update/delete "
        "it directly). Set to `id` to write back records read by tap-sage from the same "
        "business.",
    },
    "ledger_path": {
        "type": ["string", "null"],
        "description": "SQLite ledger of source key -> Sage id. Default: beside the token store, "
        "<token store dir>/<connection_name>.ledger.sqlite.",
    },
    "results_path": {
        "type": ["string", "null"],
        "description": "Results file (JSON lines, appended): one line per record with stream, "
        "operation, source key, Sage id, outcome, HTTP status, $dataCode/$message/$source and "
        "x_request_id. Default: <token store dir>/<connection_name>.results.jsonl.",
    },
    "dead_letter_path": {
        "type": ["string", "null"],
        "description": "Under on_error=continue, failed records are appended here as Singer "
        "messages that can be replayed (`target-sage --input FILE`). Default: "
        "<token store dir>/<connection_name>.dead-letter.singer.",
    },
    "on_error": {
        "type": "string",
        "enum": list(ON_ERROR),
        "default": "fail",
        "description": "fail: stop at the first failed record, exit non-zero, no STATE beyond "
        "it. continue: record the failure (results + dead letter), go on, summarise at the end.",
    },
    "dry_run": {
        "type": "boolean",
        "default": False,
        "description": "Validate every record and report what would be done, without writing "
        "to Sage or to the ledger.",
    },
    "max_parallel_writes": {
        "type": "integer",
        "minimum": 1,
        "maximum": 32,
        "default": 4,
        "description": "Writes in flight at once. POSTs to contacts, products, services, stock "
        "items and sales/purchase artefacts are always one at a time (Sage's rule); two writes to "
        "one record are never reordered.",
    },
    "default_void_reason": {
        "type": ["string", "null"],
        "description": "void_reason for voids whose record has none.",
    },
    "skip_unchanged": {
        "type": "boolean",
        "default": True,
        "description": "Skip an update whose content the ledger says was already applied "
        "(replays cost no request).",
    },
    "upload_folder": {
        "type": ["string", "null"],
        "description": "Folder the upload_attachments procedure may read local files from "
        "(`file_path`, relative to it or absolute inside it; symlinks are resolved and must stay "
        "inside). Default: none, so `file_path` is refused and only `file_base64` works: the "
        "input decides which file is read, and it must not reach the rest of the disk.",
    },
    "download_folder": {
        "type": ["string", "null"],
        "description": "Default folder of the download_attachments procedure. Default: ./"
        "attachments.",
    },
}


def _mapping(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = config.get(name) or {}
    if not isinstance(value, Mapping):
        raise SageConfigError(name, "must be an object")
    return dict(value)


@dataclass(frozen=True)
class TargetSettings:
    """Validated target settings."""

    connection: ConnectionSettings
    business_id: str | None = None
    stream_resources: dict[str, str] = field(default_factory=dict)
    operations: dict[str, str] = field(default_factory=dict)
    references: dict[str, dict[str, str]] = field(default_factory=dict)
    sage_id_field: str = "sage_id"
    ledger_path: Path = Path("ledger.sqlite")
    results_path: Path = Path("results.jsonl")
    dead_letter_path: Path = Path("dead-letter.singer")
    on_error: str = "fail"
    dry_run: bool = False
    max_parallel_writes: int = 4
    default_void_reason: str | None = None
    skip_unchanged: bool = True
    download_folder: Path = Path("attachments")
    upload_folder: Path | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TargetSettings:
        """Validate; ``SageConfigError`` names the setting (and the stream) at fault."""
        connection = ConnectionSettings.from_config(config)
        stream_resources = {str(k): str(v) for k, v in _mapping(config, "stream_resources").items()}
        check_stream_resources(stream_resources)
        operations = {str(k): str(v) for k, v in _mapping(config, "operations").items()}
        for stream, op in operations.items():
            if op not in OPERATIONS:
                raise SageConfigError(
                    f"operations.{stream}", f"{op!r} is not one of {', '.join(OPERATIONS)}"
                )
        references: dict[str, dict[str, str]] = {}
        for stream, fields in _mapping(config, "references").items():
            if not isinstance(fields, Mapping) or not all(
                isinstance(v, str) and v for v in fields.values()
            ):
                raise SageConfigError(
                    f"references.{stream}", "must map field names to stream names"
                )
            references[str(stream)] = {str(k): str(v) for k, v in fields.items()}
        on_error = str(config.get("on_error") or "fail")
        if on_error not in ON_ERROR:
            raise SageConfigError("on_error", f"{on_error!r} is not one of fail, continue")
        try:
            raw_parallel = config.get("max_parallel_writes")
            parallel = 4 if raw_parallel is None else int(raw_parallel)
        except (TypeError, ValueError):
            parallel = 0
        if not 1 <= parallel <= 32:
            raise SageConfigError(
                "max_parallel_writes", f"{config.get('max_parallel_writes')!r} is not 1 to 32"
            )
        base = connection.oauth_settings_location.parent
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", connection.connection_name)

        def path(name: str, default: str) -> Path:
            raw = config.get(name)
            return Path(str(raw)).expanduser() if raw else base / f"{safe}.{default}"

        return cls(
            connection=connection,
            business_id=config.get("business_id") or None,
            stream_resources=stream_resources,
            operations=operations,
            references=references,
            sage_id_field=str(config.get("sage_id_field") or "sage_id"),
            ledger_path=path("ledger_path", "ledger.sqlite"),
            results_path=path("results_path", "results.jsonl"),
            dead_letter_path=path("dead_letter_path", "dead-letter.singer"),
            on_error=on_error,
            dry_run=bool(config.get("dry_run", False)),
            max_parallel_writes=parallel,
            default_void_reason=config.get("default_void_reason") or None,
            skip_unchanged=bool(config.get("skip_unchanged", True)),
            download_folder=Path(str(config.get("download_folder") or "attachments")),
            upload_folder=_upload_folder(config.get("upload_folder")),
        )


def _upload_folder(raw: Any) -> Path | None:
    """The upload folder, resolved (symlinks included) once: files are held inside it."""
    if raw in (None, ""):
        return None
    folder = Path(str(raw)).expanduser()
    try:
        resolved = folder.resolve(strict=True)
    except OSError:
        raise SageConfigError("upload_folder", f"{str(folder)!r} is not a folder") from None
    if not resolved.is_dir():
        raise SageConfigError("upload_folder", f"{str(folder)!r} is not a folder")
    return resolved
