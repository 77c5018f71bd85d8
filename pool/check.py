"""`switchyard accounts check`: proves, step by step, that each account can serve.

For a Google account: its token refreshes, it has a Cloud Code project (it is onboarded when it
has none), its quota can be read, and one tiny generation per model family it lists (claude,
gemini, gpt) answers. For a key account: its model list, and one tiny generation. Each failed
step says in plain words what the user can do next (the advice of its error class). The checks
go through the same dispatcher, identity and error reading as the gateway's own requests, so a
passing check means the gateway can use the account.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from . import catalog, google, models, upstreams
from .accounts import Account
from .dispatch import Call, Dispatcher, Exchange, read_body
from .health import ErrorClass, Verdict, embedded_error, network_failure, outdated_text
from .pool import Pool
from .state import ACCOUNT_SCOPE
from .transport import TransportError

PROMPT = "Reply with the single word OK."
MAX_OUTPUT = 64  # tokens: enough for "OK", and room for a model that says a little more
CHECK_TIMEOUT = 60.0  # seconds per generation

# dialect -> a tiny generation request in that dialect (the model goes in the URL for Gemini).
TINY_BODIES: dict[str, Callable[[str], dict[str, Any]]] = {
    "antigravity": lambda model: {
        "contents": [{"role": "user", "parts": [{"text": PROMPT}]}],
        "generationConfig": {"maxOutputTokens": MAX_OUTPUT},
    },
    "gemini": lambda model: {
        "contents": [{"role": "user", "parts": [{"text": PROMPT}]}],
        "generationConfig": {"maxOutputTokens": MAX_OUTPUT},
    },
    "openai": lambda model: {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": MAX_OUTPUT},
    "anthropic": lambda model: {"model": model, "max_tokens": MAX_OUTPUT, "messages": [{"role": "user", "content": PROMPT}]},
}


@dataclass(slots=True)
class Step:
    name: str  # token, project, quota, models, or a model family (claude, gemini, gpt)
    ok: bool
    detail: str
    error_class: str | None = None
    status: int | None = None
    next: str | None = None  # what to do, in plain words, when it failed


@dataclass(slots=True)
class Report:
    id: str
    kind: str
    name: str
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(step.ok for step in self.steps)

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "name": self.name, "ok": self.ok, "steps": [asdict(s) for s in self.steps]}


def failed(name: str, verdict: Verdict, account: Account, *, model: str | None = None) -> Step:
    where = f"{model}: " if model else ""
    status = f" {verdict.status}" if verdict.status else ""
    advice = verdict.policy.advice.replace("accounts enable ID", f"accounts enable {account.id}")
    if verdict.error_class is ErrorClass.VALIDATION_REQUIRED and verdict.validation_url:
        advice = f"open {verdict.validation_url} in a browser signed in to this account, then run `switchyard accounts enable {account.id}`"
    if verdict.error_class in (ErrorClass.QUOTA_EXHAUSTED, ErrorClass.RATE_LIMIT) and verdict.retry_after:
        advice = f"wait until {_clock(time.time() + verdict.retry_after)}; {advice}"
    return Step(
        name, False, f"{where}{verdict.error_class}{status}: {verdict.message}",
        error_class=str(verdict.error_class), status=verdict.status, next=advice,
    )


class Checker:
    def __init__(self, pool: Pool, *, model: str | None = None) -> None:
        self.pool = pool
        self.dispatcher = Dispatcher(pool)
        self.model = model

    async def check(self, account: Account) -> Report:
        report = Report(account.id, account.kind, account.name)
        steps = self._google if account.kind == "google" else self._key
        await steps(account, report)
        return report

    # --- Google accounts -----------------------------------------------------------------------
    async def _google(self, account: Account, report: Report) -> None:
        try:
            await self.pool.access_token(account, force=True)
        except google.GoogleError as e:
            self.pool.penalize(account, ACCOUNT_SCOPE, e.verdict)
            report.steps.append(failed("token", e.verdict, account))
            return
        expires = self.pool.account_state(account.id).access_expires_at
        report.steps.append(Step("token", True, f"refreshed (valid for {int((expires - time.time()) // 60)} min)"))
        known = account.project or self.pool.account_state(account.id).project
        try:
            project = await self.pool.project(account)
        except google.GoogleError as e:
            self.pool.penalize(account, ACCOUNT_SCOPE, e.verdict)
            report.steps.append(failed("project", e.verdict, account))
            return
        onboarded = self.pool.account_state(account.id).onboarded
        how = "" if known else f" (onboarded just now to {onboarded})" if onboarded else " (found just now)"
        report.steps.append(Step("project", True, project + how))
        try:
            await self.pool.refresh_quota(account)
        except google.GoogleError as e:
            report.steps.append(failed("quota", e.verdict, account))
            return
        quota = self.pool.account_state(account.id).quota
        report.steps.append(Step("quota", bool(quota), _quota_summary(quota) if quota else "the account lists no models"))
        for family, model in self._google_models(quota).items():
            report.steps.append(await self._generate(account, family, model))

    def _google_models(self, quota: dict) -> dict[str, str]:
        """One model per family: the asked one, else the one with the most quota left."""
        if self.model:
            return {_family(self.model): self.model}
        best: dict[str, str] = {}
        for name in sorted(quota):
            if models.kind(name) != "text":
                continue  # image and embedding models answer no tiny text generation
            family = _family(name)
            left = quota[name].remaining
            if family not in best or (left if left is not None else 1.0) > _left(quota[best[family]]):
                best[family] = name
        return best

    # --- key accounts --------------------------------------------------------------------------------
    async def _key(self, account: Account, report: Report) -> None:
        try:
            listed = await catalog.list_models(self.pool.transport_for(account), account, self.pool.config)
        except catalog.CatalogError as e:
            report.steps.append(failed("models", e.verdict, account))
            return
        served = [name for name in listed if account.serves(name)]
        report.steps.append(Step("models", True, f"{len(served)} served of {len(listed)} listed" if listed else "the upstream lists none"))
        talks = [name for name in served if models.kind(name) == "text"]  # images and embeddings answer no chat
        model = self.model or (talks[0] if talks else next((g for g in account.model_globs if not any(ch in g for ch in "*?[")), None))
        if model is None:
            report.steps.append(Step("generate", False, "no model to try", next="give one with --model"))
            return
        report.steps.append(await self._generate(account, _family(model), model))

    # --- one tiny generation -----------------------------------------------------------------------
    async def _generate(self, account: Account, family: str, model: str) -> Step:
        dialect = upstreams.DIALECTS[account.kind]
        call = Call(model=model, operation="generate", stream=False, encode=lambda d, m: TINY_BODIES[d](m))
        call.deadline = time.monotonic() + min(CHECK_TIMEOUT, self.pool.config.proxy.request_timeout)
        started = time.monotonic()
        result = await self.dispatcher.send_to(account, call)
        if isinstance(result, Verdict):
            return failed(family, result, account, model=model)
        answer = await _read(result, dialect)
        if isinstance(answer, Verdict):
            self.dispatcher.finish(result, answer)
            return failed(family, answer, account, model=model)
        self.dispatcher.finish(result)
        said = " ".join(answer.split())[:40] or "(no text)"
        return Step(family, True, f"{model} answered {said!r} in {time.monotonic() - started:.1f} s")


async def _read(exchange: Exchange, dialect: str) -> str | Verdict:
    """The answer's text, or why it is no answer (an error inside a 200, the outdated-client text)."""
    try:
        raw = await read_body(exchange)
    except TransportError as e:
        return network_failure(e) if e.timeout else Verdict(ErrorClass.NETWORK, f"the answer broke off: {e}")
    finally:
        await exchange.response.aclose()
    if (verdict := embedded_error(raw)) is not None:
        return verdict
    try:
        text = TEXTS[dialect](raw, exchange.streamed)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return Verdict(ErrorClass.SERVER, f"the answer is not readable: {raw[:120]!r}", 200)
    if outdated_text(text):
        return Verdict(ErrorClass.CLIENT_OUTDATED, text[:200], 200)
    return text


def _gemini_text(raw: bytes, streamed: bool) -> str:
    docs = [json.loads(line[5:]) for line in raw.splitlines() if line.startswith(b"data:")] if streamed else [json.loads(raw)]
    text = ""
    for doc in docs:
        doc = doc.get("response", doc)
        for part in doc["candidates"][0].get("content", {}).get("parts", []):
            if isinstance(part.get("text"), str) and not part.get("thought"):
                text += part["text"]
    return text


def _openai_text(raw: bytes, streamed: bool) -> str:
    return json.loads(raw)["choices"][0]["message"].get("content") or ""


def _anthropic_text(raw: bytes, streamed: bool) -> str:
    return "".join(block.get("text", "") for block in json.loads(raw)["content"] if block.get("type") == "text")


TEXTS: dict[str, Callable[[bytes, bool], str]] = {
    "antigravity": _gemini_text, "gemini": _gemini_text, "openai": _openai_text, "anthropic": _anthropic_text,
}


def _family(model: str) -> str:
    return model.split("-", 1)[0]


def _left(quota: Any) -> float:
    return quota.remaining if quota.remaining is not None else 1.0


def _clock(ts: float) -> str:
    return time.strftime("%H:%M:%S" if ts - time.time() < 43200 else "%Y-%m-%d %H:%M", time.localtime(ts))


def _quota_summary(quota: dict) -> str:
    lowest = min(quota, key=lambda name: (_left(quota[name]), name))
    left = quota[lowest]
    text = f"{len(quota)} models; lowest {lowest} at {_left(left) * 100:.0f}%"
    if left.reset_at and _left(left) < 1:
        text += f", resets {_clock(left.reset_at)}"
    return text


def render(reports: list[Report]) -> str:
    """What the terminal shows: each account, each step, and the next step where one failed."""
    lines: list[str] = []
    for report in reports:
        lines.append(f"{report.id}  {report.name} ({report.kind})")
        for step in report.steps:
            lines.append(f"  {'ok  ' if step.ok else 'FAIL'}  {step.name:<8} {step.detail}")
            if step.next:
                lines.append(f"        {'':<8} next: {step.next}")
        lines.append(f"  => {'can serve' if report.ok else 'cannot serve'}")
        lines.append("")
    served = sum(report.ok for report in reports)
    lines.append(f"{served} of {len(reports)} account{'s' if len(reports) != 1 else ''} can serve")
    return "\n".join(lines)
