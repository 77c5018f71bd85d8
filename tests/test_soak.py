"""The short soak: a couple of thousand mixed requests (every caller protocol, whole and
streamed, upstream faults, callers hanging up mid-stream) through a real gateway, which must
come back flat — and every caller must have had a proper answer, recorded as it was given.
"""

from __future__ import annotations

import soak  # scripts/, put on the path by conftest

REQUESTS = 2000
# Clean answers, refusals in the caller's protocol, streams cut off by design; never a 500 (a
# gateway bug), a malformed answer, a stream that stops without its end or an error event, or a
# caller left without an answer.
EXPECTED = {"ok", "hung_up", "stream_error", "http_429", "http_502", "http_503", "http_504"}


def test_a_short_soak_comes_back_flat():
    report = soak.soak(REQUESTS, concurrency=6, seed=7, middle=False, progress=lambda line: None)
    text = report.text()
    start, end = report.samples
    assert start.settled and end.settled, text
    assert end.upstream == 0, text  # every upstream connection was released or closed
    # Margins for what a loaded machine may hold for a moment (a state write, a quota fetch);
    # a leak of one per thousand requests would exceed them.
    assert end.fds <= start.fds + 1, text
    assert end.tasks <= start.tasks + 1, text
    assert report.rss_growth < 20, text

    outcomes = report.tally.outcomes
    assert report.tally.sent == REQUESTS
    assert set(outcomes) <= EXPECTED, (outcomes, report.tally.examples)
    assert outcomes["ok"] > REQUESTS // 2 and outcomes["hung_up"] > 0, text
    assert len(report.tally.faults) >= 6, text  # most kinds of fault were in the mix

    # The ledger has one row per request, with the status the caller got.
    assert report.ledger_rows == REQUESTS, text
    by_status: dict[int | None, int] = {}
    for (_, status, _), n in report.ledger.items():
        by_status[status] = by_status.get(status, 0) + n
    assert by_status.get(200, 0) == outcomes["ok"] + outcomes["hung_up"] + outcomes["stream_error"], text
    for outcome, n in outcomes.items():
        if outcome.startswith("http_"):
            assert by_status.get(int(outcome[5:])) == n, text
    # A caller that hangs up is seen as gone (or, on a starved machine, its answer may have been
    # sent whole before the gateway learned it: then the row says ok).
    closed = sum(n for (error_class, _, _), n in report.ledger.items() if error_class == "client_closed")
    assert 0 < closed <= outcomes["hung_up"], text
