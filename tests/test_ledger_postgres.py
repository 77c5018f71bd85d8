"""The usage ledger in PostgreSQL (`[usage] database_url`): one real throw-away cluster for the
module (tests/servers.py). The same rows read the same from SQLite and PostgreSQL; the writer
keeps rows through an outage; two gateways write one table that `switchyard stats` and the
dashboard read."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from pool_rig import MODEL, add_google, home_of, wait_until
from servers import PG_PASSWORD, Postgres

from pool import history, stats, usagedb
from pool.ledger import Ledger, Record
from pool.pgledger import PgLedger


@pytest.fixture(scope="module")
def pg() -> Iterator[Postgres]:
    server = Postgres().start()
    yield server
    server.close()


@pytest.fixture
def empty(pg: Postgres) -> Postgres:
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS requests")
    from pool import pgledger

    pgledger._ready.clear()  # the table is gone: this process must create it again
    for conn in usagedb._Pool._idle.pop(pg.url, []):
        conn.close()
    return pg


def sample(now: float) -> list[Record]:
    """Rows over the last two days: several models, accounts, keys, errors and streams."""
    rows = []
    for i in range(60):
        failed = i % 7 == 3
        rows.append(Record(
            at=now - i * 2900.0 - 17, protocol=("openai_chat", "anthropic", "gemini")[i % 3], operation="generate",
            requested_model=("gpt-5", "claude-sonnet-4-6", MODEL)[i % 3],
            model=None if failed else ("gemini-3.1-pro-high", "claude-sonnet-4-6", MODEL)[i % 3],
            account_id=None if failed else f"acct{i % 4}", account=None if failed else f"Account {i % 4}",
            status=429 if failed else 200, error_class="rate_limit" if failed else None, attempts=1 + i % 3,
            stream=i % 2 == 0, latency_ms=100.0 + i * 13.7, ttfb_ms=None if failed else 20.0 + i * 3.1,
            input_tokens=0 if failed else 10 + i, output_tokens=0 if failed else 5 + 2 * i, cached_tokens=i % 5,
            reasoning_tokens=i % 4, attempt_errors="rate_limit" if i % 3 == 2 else None,
            key_id=("admin", "k1", None)[i % 3], key_label=("admin", "laptop", None)[i % 3],
            background="title" if i % 11 == 0 else None, fallback_from="gpt-4o" if i % 13 == 0 else None,
            fallback_reason="rate_limit" if i % 13 == 0 else None, images=int(i % 6 == 0), flow_id=f"flow-{i}",
        ))
    return rows


def write(ledger: Ledger, records: list[Record]) -> None:
    ledger.start()
    for record in records:
        ledger.add(record)
    ledger.close(timeout=30)


def test_stats_history_and_series_read_the_same_from_sqlite_and_postgresql(empty: Postgres, tmp_path: Path) -> None:
    now = time.time()
    records = sample(now)
    sqlite_file = tmp_path / "usage.sqlite3"
    write(Ledger(sqlite_file, 30), records)
    write(PgLedger(empty.url, 30), records)
    for where in (sqlite_file, empty.url):
        assert stats.report(where, 0, ()).totals["requests"] == len(records)
    for by in ((), ("account", "model"), ("hour",), ("key",), ("model", "key")):
        lite, pg = stats.report(sqlite_file, now - 86400, by, until=now), stats.report(empty.url, now - 86400, by, until=now)
        assert pg.to_json() == lite.to_json(), by
    for range_name in ("24h", "7d"):
        for by in ("model", "account"):
            assert stats.series(empty.url, range_name, by, until=now) == stats.series(sqlite_file, range_name, by, until=now)
    for filters in ({}, {"status": "error"}, {"status": "200"}, {"account": "acct1"}, {"model": MODEL}, {"protocol": "anthropic"}):
        assert history.rows(empty.url, filters, limit=500) == history.rows(sqlite_file, filters, limit=500)
    page = history.rows(empty.url, limit=10)
    assert len(page) == 10 and [r["id"] for r in page] == sorted((r["id"] for r in page), reverse=True)
    assert history.rows(empty.url, before=page[-1]["id"], limit=5) == history.rows(sqlite_file, before=page[-1]["id"], limit=5)
    assert history.latest_id(empty.url) == history.latest_id(sqlite_file) == len(records)
    assert history.choices(empty.url, now - 7 * 86400) == history.choices(sqlite_file, now - 7 * 86400)
    assert history.to_csv(empty.url, 0, now) == history.to_csv(sqlite_file, 0, now)
    assert usagedb.usage_by_key(empty.url, now - 86400) == usagedb.usage_by_key(sqlite_file, now - 86400)
    assert usagedb.usage_by_key(empty.url, now - 86400)["k1"][0] > 0


def test_a_reader_before_any_writer_finds_an_empty_ledger(empty: Postgres) -> None:
    assert stats.report(empty.url, 0, ("account",)).totals["requests"] == 0
    assert history.rows(empty.url) == [] and history.latest_id(empty.url) == 0


def test_rows_wait_through_an_outage_and_the_password_never_shows(empty: Postgres, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="switchyard.ledger")
    now = time.time()
    records = sample(now)
    ledger = PgLedger(empty.url, 30)
    ledger.start()
    for record in records[:20]:
        ledger.add(record)
    wait_until(lambda: stats.report(empty.url, 0, ()).totals["requests"] == 20, timeout=20)
    empty.stop()
    try:
        for record in records[20:]:
            ledger.add(record)
        wait_until(lambda: "cannot be reached" in caplog.text or "lost" in caplog.text, timeout=20)
        with pytest.raises(usagedb.LedgerError) as refused:
            stats.report(empty.url, 0, ())
        assert PG_PASSWORD not in str(refused.value) and "***@127.0.0.1" in str(refused.value)
    finally:
        empty.resume()
    wait_until(lambda: stats.report(empty.url, 0, ()).totals["requests"] == len(records), timeout=30)
    ledger.close(timeout=10)
    assert "reachable again" in caplog.text
    assert PG_PASSWORD not in caplog.text


def test_two_gateways_write_one_ledger_that_stats_and_the_dashboard_read(empty: Postgres, make_gateway, sim) -> None:
    gateways = []
    for _ in range(2):
        gateway = make_gateway({"usage": {"database_url": empty.url}}, start=False)
        add_google(sim, home_of(gateway.home))
        gateways.append(gateway.start())
    seen = {"requests": 0, "input_tokens": 0, "output_tokens": 0}
    served = set()
    for n in range(9):
        gateway = gateways[n % 2]
        response = gateway.openai().chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": f"ledger {n}"}], stream=n % 3 == 0,
            **({"stream_options": {"include_usage": True}} if n % 3 == 0 else {}),
        )
        served.add(response.headers["x-switchyard-account"])
        parsed = response.parse()
        if n % 3 == 0:
            usage = [chunk.usage for chunk in parsed if chunk.usage is not None][-1]
        else:
            usage = parsed.usage
        seen["requests"] += 1
        seen["input_tokens"] += usage.prompt_tokens
        seen["output_tokens"] += usage.completion_tokens
    assert len(served) == 2  # each gateway's own account: rows from both replicas
    wait_until(lambda: stats.report(empty.url, 0, ()).totals["requests"] == seen["requests"], timeout=20)
    with psycopg.connect(empty.url) as conn:
        accounts = {row[0] for row in conn.execute("SELECT DISTINCT account_id FROM requests")}
    assert accounts == served
    for gateway in gateways:
        out = json.loads(gateway.cli("stats", "--json", "--since", "all").stdout)
        assert {k: out["totals"][k] for k in seen} == seen
        assert {row["account_id"] for row in out["rows"]} == served
        by_key = json.loads(gateway.cli("stats", "--json", "--since", "all", "--by", "key").stdout)
        assert [(row["key_id"], row["requests"]) for row in by_key["rows"]] == [("admin", seen["requests"])]
        assert PG_PASSWORD not in gateway.log()
    page = httpx.get(f"{gateways[1].url}/api/requests?limit=50", headers=gateways[1].auth(), timeout=10).json()
    assert len(page["rows"]) == seen["requests"] and {r["account_id"] for r in page["rows"]} == served
    usage = httpx.get(f"{gateways[0].url}/api/stats?since=1h", headers=gateways[0].auth(), timeout=10).json()
    assert usage["totals"]["input_tokens"] == seen["input_tokens"]
    assert not (gateways[0].home / "data" / "usage.sqlite3").exists()
