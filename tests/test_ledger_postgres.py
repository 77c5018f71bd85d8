"""The usage ledger in PostgreSQL (`[usage] database_url`): one real throw-away cluster for the
module (tests/servers.py). Both databases make the table from one definition; the same rows read
the same from SQLite and PostgreSQL; the writer keeps rows through an outage; two gateways write
one table that `switchyard stats` and the dashboard read, and lose no request when PostgreSQL
stops; its password shows nowhere."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from pool_rig import MODEL, add_google, home_of, wait_until
from servers import PG_PASSWORD, Postgres

from pool import config as config_file
from pool import editable, history, ledger, stats, usagedb
from pool.config import Config, ConfigError
from pool.dialects import POSTGRES
from pool.ledger import Ledger, Record
from pool.pgledger import PgLedger
from test_dashboard_api import Events


@pytest.fixture(scope="module")
def pg() -> Iterator[Postgres]:
    server = Postgres()
    try:
        yield server.start()
    finally:
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


def write(writer: Ledger, records: list[Record]) -> None:
    writer.start()
    for record in records:
        writer.add(record)
    writer.close(timeout=30)


def pg_columns(url: str) -> list[tuple[str, bool]]:
    """(name, may be empty) of each column of the requests table, in order."""
    with psycopg.connect(url) as conn:
        return [(name, nullable == "YES") for name, nullable in conn.execute(
            "SELECT column_name, is_nullable FROM information_schema.columns WHERE table_name = 'requests' ORDER BY ordinal_position"
        )]


# --- one schema ---------------------------------------------------------------------------------------------


def test_both_databases_make_the_table_from_one_definition(empty: Postgres, tmp_path: Path) -> None:
    sqlite_file = tmp_path / "usage.sqlite3"
    ledger.connect(sqlite_file).close()
    with usagedb.reading(empty.url):  # a first reader creates the table, as the writer would
        pass
    with sqlite3.connect(sqlite_file) as db:
        lite = [(row[1], not row[3]) for row in db.execute("PRAGMA table_info(requests)")]
    assert [name for name, _ in lite] == ["id", *ledger.COLUMNS]
    assert pg_columns(empty.url)[1:] == lite[1:]  # (SQLite's INTEGER PRIMARY KEY reports itself nullable)
    assert dict(lite)["account_id"] and not dict(lite)["at"] and not dict(lite)["images"]


def test_an_older_postgresql_table_gains_the_added_columns_with_its_rows_kept(empty: Postgres) -> None:
    now = time.time()
    first = ",\n".join(f"{name} {ledger.declaration(name, POSTGRES)}" for name in ledger.FIRST_COLUMNS)
    with psycopg.connect(empty.url) as conn:
        conn.execute(f"CREATE TABLE requests ({POSTGRES.id_column}, {first})")
        conn.execute("INSERT INTO requests (at, protocol, operation, attempts, stream, input_tokens) "
                     "VALUES (%s, 'gemini', 'generate', 1, true, 7)", (now - 86400,))
    write(PgLedger(empty.url, 30), sample(now)[:3])
    assert [name for name, _ in pg_columns(empty.url)] == ["id", *ledger.COLUMNS]
    old, *new = history.rows(empty.url, limit=10)[::-1]
    assert (old["input_tokens"], old["images"], old["key_id"], old["stream"]) == (7, 0, None, True)
    assert [row["key_id"] for row in new] == ["admin", "k1", None] and new[0]["images"] == 1


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
    caplog.set_level(logging.DEBUG, logger="switchyard.ledger")
    now = time.time()
    records = sample(now)
    writer = PgLedger(empty.url, 30)
    writer.start()
    for record in records[:20]:
        writer.add(record)
    wait_until(lambda: stats.report(empty.url, 0, ()).totals["requests"] == 20, timeout=20)
    empty.stop()
    try:
        for record in records[20:]:
            writer.add(record)
        wait_until(lambda: "cannot be reached" in caplog.text, timeout=20)
        with pytest.raises(usagedb.LedgerError) as refused:
            stats.report(empty.url, 0, ())
        assert PG_PASSWORD not in str(refused.value) and "***@127.0.0.1" in str(refused.value)
        time.sleep(1.6)  # (several reconnects fail meanwhile: the log still says it once)
    finally:
        empty.resume()
    wait_until(lambda: stats.report(empty.url, 0, ()).totals["requests"] == len(records), timeout=30)
    writer.close(timeout=10)
    lines = [r.getMessage() for r in caplog.records if r.name == "switchyard.ledger"]
    assert len([line for line in lines if "cannot be reached" in line]) == 1, lines
    assert len([line for line in lines if "is back" in line]) == 1, lines
    assert PG_PASSWORD not in caplog.text
    assert history.latest_id(empty.url) == len(records)  # each row once


def test_rows_waiting_at_exit_are_kept_locally_and_written_by_the_next_start(
    empty: Postgres, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="switchyard.ledger")
    records = sample(time.time())[:12]
    unsent = tmp_path / "usage-unsent.sqlite3"

    def kept() -> int:
        with sqlite3.connect(unsent) as db:
            return db.execute("SELECT count(*) FROM requests").fetchone()[0]

    writer = PgLedger(empty.url, 30, unsent=unsent)
    writer.start()
    for record in records[:5]:
        writer.add(record)
    wait_until(lambda: stats.report(empty.url, 0, ()).totals["requests"] == 5, timeout=20)
    empty.stop()
    try:
        for record in records[5:]:
            writer.add(record)
        wait_until(lambda: "cannot be reached" in caplog.text, timeout=20)
        writer.close(timeout=10)  # the gateway stops while PostgreSQL is away
        assert "7 rows are kept in" in caplog.text and kept() == 7
    finally:
        empty.resume()
    again = PgLedger(empty.url, 30, unsent=unsent)
    again.start()
    try:
        wait_until(lambda: stats.report(empty.url, 0, ()).totals["requests"] == len(records), timeout=30)
    finally:
        again.close(timeout=10)
    assert kept() == 0 and "7 rows kept at an earlier exit are written" in caplog.text
    assert history.latest_id(empty.url) == len(records)  # each row once
    assert PG_PASSWORD not in caplog.text


def test_a_reader_outlives_a_restart_of_postgresql(empty: Postgres) -> None:
    write(PgLedger(empty.url, 30), sample(time.time())[:5])
    assert stats.report(empty.url, 0, ()).totals["requests"] == 5  # its connection now waits, idle, for the next read
    empty.stop()
    empty.resume()
    assert stats.report(empty.url, 0, ()).totals["requests"] == 5


def test_a_database_url_password_shows_in_no_config_error_nor_the_dashboard(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[usage]\ndatabase_url = "mysql://ledger:hunter2-secret@db.internal/usage"\n')
    with pytest.raises(ConfigError) as refused:
        config_file.load(path)
    assert "usage.database_url" in str(refused.value) and "hunter2" not in str(refused.value)
    assert "***@db.internal" in str(refused.value)
    config = Config.model_validate({"usage": {"database_url": f"postgresql://switchyard:{PG_PASSWORD}@db.internal:5432/usage"}})
    shown = json.dumps(editable.view(config, config, config))
    assert PG_PASSWORD not in shown and "postgresql://***@db.internal:5432/usage" in shown


# --- replicas ------------------------------------------------------------------------------------------------


def two_gateways(url: str, make_gateway, sim) -> list:
    """Two gateway processes, each with its own home and account, both writing to `url`."""
    gateways = []
    for _ in range(2):
        gateway = make_gateway({"usage": {"database_url": url}}, start=False)
        add_google(sim, home_of(gateway.home))
        gateways.append(gateway.start())
    return gateways


def ask(gateway, n: int, seen: dict[str, int]) -> str:
    """One chat request (every third streamed); adds what the client saw to `seen`, returns the
    account that served it."""
    stream = n % 3 == 0
    response = gateway.openai().chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": f"ledger {n}"}], stream=stream,
        **({"stream_options": {"include_usage": True}} if stream else {}),
    )
    parsed = response.parse()
    usage = [chunk.usage for chunk in parsed if chunk.usage is not None][-1] if stream else parsed.usage
    seen["requests"] += 1
    seen["input_tokens"] += usage.prompt_tokens
    seen["output_tokens"] += usage.completion_tokens
    return response.headers["x-switchyard-account"]


def cli_totals(gateway) -> dict[str, int]:
    out = json.loads(gateway.cli("stats", "--json", "--since", "all").stdout)
    return {k: out["totals"][k] for k in ("requests", "input_tokens", "output_tokens")}


def test_two_gateways_write_one_ledger_that_stats_and_the_dashboard_read(empty: Postgres, make_gateway, sim) -> None:
    gateways = two_gateways(empty.url, make_gateway, sim)
    seen = {"requests": 0, "input_tokens": 0, "output_tokens": 0}
    served = {ask(gateways[n % 2], n, seen) for n in range(9)}
    assert len(served) == 2  # each gateway's own account: rows from both replicas
    wait_until(lambda: stats.report(empty.url, 0, ()).totals["requests"] == seen["requests"], timeout=20)
    with psycopg.connect(empty.url) as conn:
        accounts = {row[0] for row in conn.execute("SELECT DISTINCT account_id FROM requests")}
    assert accounts == served
    for gateway in gateways:
        assert cli_totals(gateway) == seen
        out = json.loads(gateway.cli("stats", "--json", "--since", "all").stdout)
        assert {row["account_id"] for row in out["rows"]} == served
        assert sum(row["requests"] for row in out["rows"]) == seen["requests"]
        by_key = json.loads(gateway.cli("stats", "--json", "--since", "all", "--by", "key").stdout)
        assert [(row["key_id"], row["requests"]) for row in by_key["rows"]] == [("admin", seen["requests"])]
        stats_page = httpx.get(f"{gateway.url}/api/stats?since=1h", headers=gateway.auth(), timeout=10).json()
        assert {k: stats_page["totals"][k] for k in seen} == seen
        usage = httpx.get(f"{gateway.url}/api/usage?range=24h", headers=gateway.auth(), timeout=10).json()
        assert sum(usage["requests"]) == seen["requests"]
        assert sum(map(sum, usage["tokens"].values())) == seen["input_tokens"] + seen["output_tokens"]
        page = httpx.get(f"{gateway.url}/api/requests?limit=50", headers=gateway.auth(), timeout=10).json()
        assert len(page["rows"]) == seen["requests"] and {r["account_id"] for r in page["rows"]} == served
        shown = httpx.get(f"{gateway.url}/api/config", headers=gateway.auth(), timeout=10).text
        assert "***@127.0.0.1" in shown and PG_PASSWORD not in shown
    # A page open on one replica hears of the requests the other serves.
    events = Events(gateways[0])
    try:
        events.next("hello")
        served_by_other = ask(gateways[1], 100, seen)
        row = events.next("requests", lambda rows: any(r["account_id"] == served_by_other for r in rows))
        assert row
    finally:
        events.close()
    for gateway in gateways:
        assert not (gateway.home / "data" / "usage.sqlite3").exists()
        gateway.stop()
        assert PG_PASSWORD not in gateway.log()


def test_postgresql_stopped_mid_run_costs_no_request_and_its_rows_arrive_after(empty: Postgres, make_gateway, sim) -> None:
    gateways = two_gateways(empty.url, make_gateway, sim)
    seen = {"requests": 0, "input_tokens": 0, "output_tokens": 0}
    for n in range(4):
        ask(gateways[n % 2], n, seen)
    wait_until(lambda: cli_totals(gateways[0]) == seen, timeout=20)
    empty.stop()
    try:
        for n in range(4, 12):
            ask(gateways[n % 2], n, seen)  # every one answered: an error would raise here
        wait_until(lambda: all("cannot be reached" in g.log() for g in gateways), timeout=20)
        refused = gateways[0].cli("stats", check=False)
        assert refused.returncode == 1 and "***@127.0.0.1" in refused.stderr and "cannot be reached" in refused.stderr
        api = httpx.get(f"{gateways[1].url}/api/stats", headers=gateways[1].auth(), timeout=30)
        assert api.status_code == 503 and "***@127.0.0.1" in api.text
        listed = gateways[0].cli("keys", "list")
        for text in (refused.stdout, refused.stderr, api.text, listed.stdout, listed.stderr):
            assert PG_PASSWORD not in text
    finally:
        empty.resume()
    wait_until(lambda: cli_totals(gateways[0]) == seen, timeout=40)
    assert cli_totals(gateways[1]) == seen
    for gateway in gateways:
        gateway.stop()
        log = gateway.log()
        assert log.count("cannot be reached") == 1 and log.count("is back") == 1, log
        assert PG_PASSWORD not in log
