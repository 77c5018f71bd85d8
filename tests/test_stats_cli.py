"""The usage ledger on its own (threads, retention, a full queue, a bad file) and the
`switchyard stats` command that reads it."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sqlite3
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import BIN
from pool import ledger as ledger_module
from pool.ledger import Ledger, Record
from pool.stats import parse_since

NOW = time.time()
DAY = 86400.0


def record(at: float, *, account: str | None = "acc1", model: str | None = "gemini-2.5-flash", status: int = 200,
           error: str | None = None, attempts: int = 1, tokens: tuple[int, int] = (10, 20), **extra) -> Record:
    return Record(
        at=at, protocol=extra.pop("protocol", "openai_chat"), operation="generate",
        requested_model=extra.pop("requested_model", model), model=model, account_id=account,
        account=f"{account}@example.com" if account else None, status=status, error_class=error,
        attempts=attempts, stream=extra.pop("stream", False), latency_ms=extra.pop("latency_ms", 100.0),
        ttfb_ms=extra.pop("ttfb_ms", 40.0), input_tokens=tokens[0], output_tokens=tokens[1],
        cached_tokens=extra.pop("cached", 0), reasoning_tokens=extra.pop("reasoning", 0),
    )


def write(path: Path, records: list[Record], retention_days: int = 30) -> None:
    ledger = Ledger(path, retention_days)
    ledger.start()
    for r in records:
        ledger.add(r)
    ledger.close()


def count(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT count(*) FROM requests").fetchone()[0]
    finally:
        db.close()


def stats(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SWITCHYARD_HOME": str(home)}
    return subprocess.run([str(BIN / "switchyard"), "stats", *args], env=env, capture_output=True, text=True, timeout=60)


# --- the ledger -------------------------------------------------------------------------------------


def test_rows_from_many_threads_all_arrive(tmp_path):
    path = tmp_path / "data" / "usage.sqlite3"
    ledger = Ledger(path, 30)
    ledger.start()

    def producer(n: int) -> None:
        for i in range(250):
            ledger.add(record(NOW - i, account=f"acc{n}"))

    threads = [threading.Thread(target=producer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ledger.close()
    assert count(path) == 1000
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT count(DISTINCT account_id) FROM requests").fetchone()[0] == 4
    db.close()


def test_a_ledger_others_could_read_is_made_private(tmp_path):
    path = tmp_path / "usage.sqlite3"
    sqlite3.connect(path).close()  # as an older version, or a copy, may have left it
    path.chmod(0o644)
    ledger_module.connect(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_retention_removes_old_rows_when_the_ledger_opens(tmp_path):
    path = tmp_path / "usage.sqlite3"
    write(path, [record(NOW - 40 * DAY), record(NOW - 20 * DAY), record(NOW - 60)])
    assert count(path) == 3
    write(path, [], retention_days=30)
    assert count(path) == 2
    write(path, [], retention_days=7)
    assert count(path) == 1


def test_a_full_queue_drops_rows_and_never_blocks(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(ledger_module, "QUEUE_MAX", 10)
    ledger = Ledger(tmp_path / "usage.sqlite3", 30)  # not started: nothing drains the queue
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="switchyard.ledger"):
        for i in range(15):
            ledger.add(record(NOW - i))
    assert time.monotonic() - started < 0.5
    assert ledger._dropped == 5
    assert "cannot keep up" in caplog.text


def test_an_unusable_ledger_file_costs_the_rows_not_the_gateway(tmp_path, caplog):
    path = tmp_path / "usage.sqlite3"
    path.mkdir()  # a directory where the file should be
    ledger = Ledger(path, 30)
    with caplog.at_level(logging.ERROR, logger="switchyard.ledger"):
        ledger.start()
        for i in range(3):
            ledger.add(record(NOW - i))
        started = time.monotonic()
        ledger.close()
    assert time.monotonic() - started < 2
    assert "cannot be opened" in caplog.text


def test_a_ledger_from_a_newer_version_is_refused(tmp_path):
    path = tmp_path / "usage.sqlite3"
    write(path, [record(NOW)])
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(sqlite3.DatabaseError, match="newer"):
        ledger_module.connect(path)


def test_a_ledger_of_the_first_schema_gains_the_attempt_errors_and_keeps_its_rows(tmp_path):
    path = tmp_path / "usage.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(ledger_module._DDL.replace(",\n    attempt_errors TEXT", ""))
    db.execute("INSERT INTO requests (at, protocol, operation, attempts) VALUES (?, 'openai_chat', 'generate', 1)", (NOW,))
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    write(path, [dataclasses.replace(record(NOW), attempt_errors="timeout,server")])
    db = sqlite3.connect(path)
    rows = db.execute("SELECT attempts, attempt_errors FROM requests ORDER BY id").fetchall()
    assert rows == [(1, None), (1, "timeout,server")]
    assert db.execute("PRAGMA user_version").fetchone()[0] == ledger_module.SCHEMA_VERSION
    db.close()


# --- switchyard stats ---------------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path) -> Path:
    hour = 3600.0
    write(tmp_path / "data" / "usage.sqlite3", [
        record(NOW - 3 * DAY, account="old", tokens=(1000, 1000)),  # outside the default 24h
        record(NOW - 5 * hour, account="acc1", tokens=(10, 20), latency_ms=100.0),
        record(NOW - 5 * hour, account="acc1", tokens=(30, 40), attempts=2, latency_ms=300.0, cached=5),
        record(NOW - 1 * hour, account="acc2", model="claude-sonnet-4-5", tokens=(7, 9), reasoning=3,
               protocol="anthropic", stream=True, latency_ms=200.0),
        record(NOW - 60, account=None, model=None, requested_model="no-such-model", status=404, error="not_found",
               attempts=0, tokens=(0, 0), latency_ms=1.0, ttfb_ms=None),
        record(NOW - 30, account="acc2", model="claude-sonnet-4-5", status=429, error="rate_limit", attempts=3,
               tokens=(0, 0), latency_ms=50.0, ttfb_ms=None),
    ])
    return tmp_path


def test_stats_json_totals_and_rows(home):
    result = stats(home, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {"since", "until", "by", "totals", "rows"}
    assert report["by"] == ["account", "model"]
    t = report["totals"]
    assert (t["requests"], t["errors"], t["retried"], t["attempts"]) == (5, 2, 2, 7)
    assert (t["input_tokens"], t["output_tokens"], t["cached_tokens"], t["reasoning_tokens"]) == (47, 69, 5, 3)
    assert t["statuses"] == {"200": 3, "404": 1, "429": 1}
    assert t["error_classes"] == {"not_found": 1, "rate_limit": 1}
    assert t["p50_latency_ms"] == 100.0 and t["p95_latency_ms"] == 300.0
    rows = {(r["account_id"], r["model"]): r for r in report["rows"]}
    assert set(rows) == {("acc1", "gemini-2.5-flash"), ("acc2", "claude-sonnet-4-5"), (None, "no-such-model")}
    acc1 = rows["acc1", "gemini-2.5-flash"]
    assert (acc1["requests"], acc1["input_tokens"], acc1["output_tokens"], acc1["avg_latency_ms"]) == (2, 40, 60, 200.0)
    assert acc1["account"] == "acc1@example.com"
    assert rows["acc2", "claude-sonnet-4-5"]["errors"] == 1
    assert report["rows"][0]["requests"] >= report["rows"][-1]["requests"]


def test_stats_since_and_by(home):
    everything = json.loads(stats(home, "--json", "--since", "all").stdout)
    assert everything["totals"]["requests"] == 6 and everything["totals"]["input_tokens"] == 1047
    recent = json.loads(stats(home, "--json", "--since", "2h", "--by", "account").stdout)
    assert recent["totals"]["requests"] == 3
    assert {r["account_id"] for r in recent["rows"]} == {"acc2", None}
    hours = json.loads(stats(home, "--json", "--by", "hour").stdout)["rows"]
    assert [r["hour"] for r in hours] == sorted(r["hour"] for r in hours)
    assert sum(r["requests"] for r in hours) == 5 and len(hours) >= 2
    models = json.loads(stats(home, "--json", "--by", "model").stdout)["rows"]
    assert {r["model"]: r["requests"] for r in models} == {"gemini-2.5-flash": 2, "claude-sonnet-4-5": 2, "no-such-model": 1}


def test_stats_table(home):
    text = stats(home).stdout
    lines = text.splitlines()
    assert "requests 5" in lines[1] and "errors 2 (40.0%)" in lines[1]
    assert "in 47" in lines[2] and "out 69" in lines[2]
    header = next(line for line in lines if line.startswith("ACCOUNT"))
    assert header.split()[:3] == ["ACCOUNT", "MODEL", "REQUESTS"]
    assert any(line.startswith("acc1@example.com") and "gemini-2.5-flash" in line for line in lines)
    assert any(line.startswith("(none)") and "no-such-model" in line for line in lines)


def test_stats_on_a_fresh_home_and_bad_arguments(tmp_path):
    result = stats(tmp_path, "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout)["totals"]["requests"] == 0
    assert not (tmp_path / "data" / "usage.sqlite3").exists()  # reading never creates the ledger
    assert "no requests" in stats(tmp_path).stdout
    bad = stats(tmp_path, "--since", "yesterday")
    assert bad.returncode == 2 and "24h" in bad.stderr
    assert stats(tmp_path, "--by", "colour").returncode == 2


def test_parse_since():
    assert parse_since("30m", now=10_000) == 10_000 - 1800
    assert parse_since("24h", now=100_000) == 100_000 - 86400
    assert parse_since("1.5d", now=200_000) == 200_000 - 1.5 * 86400
    assert parse_since("2w", now=2_000_000) == 2_000_000 - 14 * 86400
    assert parse_since("all") == 0
    assert parse_since("2025-06-01T10:00") == time.mktime((2025, 6, 1, 10, 0, 0, 0, 0, -1))


def test_a_ledger_from_before_images_is_brought_up_to_date(tmp_path):
    """A ledger written by a gateway that counted no images gains the column, its rows kept."""
    path = tmp_path / "usage.sqlite3"
    with sqlite3.connect(path) as old:
        old.executescript(ledger_module._DDL.replace(",\n    images INTEGER NOT NULL DEFAULT 0", ""))
        old.execute("INSERT INTO requests (at, protocol, operation, input_tokens) VALUES (?, 'openai_chat', 'generate', 7)",
                    (NOW,))
        old.execute("PRAGMA user_version=1")
    assert "images" not in ledger_module._DDL.replace(",\n    images INTEGER NOT NULL DEFAULT 0", "")
    db = ledger_module.connect(path)
    try:
        assert db.execute("SELECT input_tokens, images FROM requests").fetchall() == [(7, 0)]
        assert db.execute("PRAGMA user_version").fetchone()[0] == ledger_module.SCHEMA_VERSION
    finally:
        db.close()
    write(path, [Record(at=NOW, protocol="openai_images", operation="images", requested_model="gpt-image-1",
                        model="gemini-3.1-flash-image", account_id="a", account="a", status=200, error_class=None,
                        attempts=1, stream=False, latency_ms=1.0, ttfb_ms=1.0, output_tokens=2580, images=2)])
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT sum(images) FROM requests").fetchone()[0] == 2
