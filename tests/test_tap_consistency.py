"""Issue 4 "Consistency", end to end: another client creates, updates and deletes records over
HTTP while tap-sage reads many pages of them, concurrently, from the sandbox.

Checked exactly, per stream:
1. every record that existed throughout the sync (live before it began and after it ended) is
   emitted by the sync;
2. every record's final version is emitted by the sync or by the next incremental run (from the
   sync's last STATE), and every deletion of a record that existed before the sync is emitted as
   a deletion record by one of them;
3. no version of a record is emitted twice by one run.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from pathlib import Path

from tap_sage.sandbox.runner import SandboxProcess
from tests.tap_helpers import live_records, run_tap
from tests.test_tap_sync import Api, business_ids, with_settings

# creation order + deletions; sort=updated_at + voids; sort=updated_at + deletions
STREAMS = ("contacts", "sales_invoices", "contact_payments")


class Writer(threading.Thread):
    """Random creates, updates and deletes until stopped."""

    def __init__(self, api: Api, ids: dict[str, list[str]], seed: int) -> None:
        super().__init__(daemon=True)
        self.api = api
        self.ids = {k: list(v) for k, v in ids.items()}
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.done: Counter[str] = Counter()
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.step()
            except Exception as exc:  # noqa: BLE001 - reported by the test
                self.errors.append(repr(exc))
                return

    def step(self) -> None:
        roll = self.rng.random()
        contacts, invoices = self.ids["contacts"], self.ids["sales_invoices"]
        payments = self.ids["contact_payments"]
        if roll < 0.3 and payments:  # a payment changes, then perhaps goes
            victim = self.rng.choice(payments)
            body = {"contact_payment": {"reference": f"ref {self.rng.random():.6f}"}}
            response = self.api.put(f"/contact_payments/{victim}", body)
            assert response.status_code == 200, response.text
            self.done["update payment"] += 1
            if self.rng.random() < 0.5:
                payments.remove(victim)
                response = self.api.delete(f"/contact_payments/{victim}")
                assert response.status_code == 204, response.text
                self.done["delete payment"] += 1
            return
        roll = self.rng.random()
        if roll < 0.2:
            body = {"contact": {"name": f"Writer {self.rng.random():.6f}",
                                "contact_type_ids": ["CUSTOMER"]}}  # fmt: skip
            response = self.api.post("/contacts", body)
            assert response.status_code == 201, response.text
            contacts.append(response.json()["id"])
            self.done["create"] += 1
        elif roll < 0.45:
            victim = self.rng.choice(contacts)
            response = self.api.put(f"/contacts/{victim}", {"contact": {"notes": "changed"}})
            assert response.status_code == 200, response.text
            self.done["update contact"] += 1
        elif roll < 0.65:
            victim = contacts.pop(self.rng.randrange(len(contacts)))
            response = self.api.delete(f"/contacts/{victim}")
            assert response.status_code == 204, response.text
            self.done["delete contact"] += 1
        elif roll < 0.85:
            victim = self.rng.choice(invoices)
            body = {"sales_invoice": {"notes": f"changed {self.rng.random():.6f}"}}
            response = self.api.put(f"/sales_invoices/{victim}", body)
            assert response.status_code in (200, 422), response.text  # 422: void, not editable
            self.done["update invoice"] += 1
        else:
            victim = invoices.pop(self.rng.randrange(len(invoices)))
            response = self.api.delete(f"/sales_invoices/{victim}", void_reason="test")
            already_void = response.status_code == 422 and "already void" in response.text
            assert response.status_code in (200, 204) or already_void, response.text
            self.done["void or delete invoice"] += 1


def test_a_sync_under_concurrent_writes_loses_nothing(sandbox_factory, connection_config, tmp_path: Path) -> None:  # fmt: skip
    box: SandboxProcess = sandbox_factory(latency_ms=10)
    business = business_ids(box.db)[0]
    granted = box.grant()
    config = with_settings(
        connection_config,
        access_token=granted["access_token"],
        refresh_token=granted["refresh_token"],
        oauth_settings_location=str(tmp_path / "tokens.json"),
        advanced_config={"api_url": box.api_url, "token_url": box.token_url, "page_size": 20},
        business_ids=[business],
        max_concurrency=4,
    )
    before = {s: live_records(box.db, s, business) for s in STREAMS}
    writer = Writer(Api(box, business), {s: sorted(before[s]) for s in STREAMS}, seed=11)
    writer.start()
    try:
        first = run_tap(tmp_path, config, STREAMS, tag="during")
    finally:
        writer.stop.set()
        writer.join(timeout=30)
    assert not writer.errors, writer.errors
    assert sum(writer.done.values()) >= 20, writer.done  # the sync really ran under writes
    assert writer.done["delete payment"] and writer.done["delete contact"], writer.done
    after = {s: live_records(box.db, s, business) for s in STREAMS}
    second = run_tap(tmp_path, config, STREAMS, state=first.state, tag="next")

    for stream in STREAMS:
        live1 = [r for r in first.records(stream) if not r.get("_sdc_deleted_at")]
        versions1 = Counter((r["id"], r["updated_at"]) for r in live1)
        assert not [v for v, n in versions1.items() if n > 1], f"{stream}: duplicates"
        # 1. existed throughout -> emitted by the sync
        throughout = set(before[stream]) & set(after[stream])
        missing = throughout - {r["id"] for r in live1}
        assert not missing, f"{stream}: lost {sorted(missing)[:5]}"
        # 2. final versions and deletions -> emitted by the sync or the next run
        live2 = [r for r in second.records(stream) if not r.get("_sdc_deleted_at")]
        versions = set(versions1) | {(r["id"], r["updated_at"]) for r in live2}
        stale = {i for i, u in after[stream].items() if (i, u) not in versions}
        assert not stale, f"{stream}: final versions not emitted: {sorted(stale)[:5]}"
        deleted = set(before[stream]) - set(after[stream])
        tombstones = {
            r["id"]
            for run in (first, second)
            for r in run.records(stream)
            if r.get("_sdc_deleted_at")
        }
        assert deleted <= tombstones, f"{stream}: deletions not emitted"
