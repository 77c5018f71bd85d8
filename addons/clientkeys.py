"""Client keys at the door: which key a request carries, whether it may pass now, what it spent.

`ClientAuth` asks here about any key that is not the admin key; what it learns rides on the flow
(`flow.metadata[CLIENT]`, plain data) for the gateway (a key's models) and the Monitor (ledger
rows and metrics carry the key's label). The keys file is followed by its stat signature on
every look, so `switchyard keys ...` takes effect at once.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass
from typing import Any

from mitmproxy import ctx, exceptions, http

from pool import rates, usagedb
from pool.shared import Shared
from pool.keys import ClientKey, KeysError, KeyStore

from . import trace
from .cluster import Cluster
from .settings import Settings

log = logging.getLogger("switchyard")

CLIENT = "switchyard.client"  # flow.metadata key: {"id", "label", "models"} of the key that called
ADMIN = "admin"  # id and label of the config's api_key
WINDOW_OPTION = "switchyard_rate_window"


@dataclass(frozen=True, slots=True)
class Client:
    id: str
    label: str
    models: tuple[str, ...] = ()

    def allows(self, model: str) -> bool:
        return not self.models or any(fnmatch.fnmatchcase(model, glob) for glob in self.models)

    def as_metadata(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "models": list(self.models)}


def client_of(flow: http.HTTPFlow) -> Client | None:
    """The key a request came with (None: no key was needed and none was given)."""
    data = flow.metadata.get(CLIENT)
    if not isinstance(data, dict):
        return None
    return Client(data["id"], data["label"], tuple(data.get("models") or ()))


def admit_admin(flow: http.HTTPFlow) -> None:
    flow.metadata[CLIENT] = Client(ADMIN, ADMIN).as_metadata()


class ClientKeys:
    def __init__(self, settings: Settings, cluster: Cluster | None = None) -> None:
        self.settings = settings
        self.cluster = cluster
        self.store: KeyStore | None = None
        self.rates = rates.Rates()

    @property
    def shared(self) -> Shared | None:
        """The store the replicas share, while it is reachable: the counters live there."""
        store = self.cluster.store if self.cluster is not None else None
        return store if store is not None and store.active else None

    def load(self, loader: Any) -> None:
        loader.add_option(
            WINDOW_OPTION, int, int(rates.MINUTE),
            "Seconds of the client keys' per-minute windows (rpm, tpm); tests shorten it.",
        )

    def configure(self, updated: set[str]) -> None:
        if WINDOW_OPTION in updated:
            window = ctx.options.switchyard_rate_window
            if window <= 0:
                raise exceptions.OptionsError(f"{WINDOW_OPTION} must be more than 0")
            self.rates.window = window

    def running(self) -> None:
        if self.settings.config is None or self.store is not None:
            return
        home = self.settings.home
        self.store = KeyStore(home.keys_file)
        try:
            self.store.load()
        except KeysError as e:
            log.error("client keys not loaded, none is accepted: %s", e)
        try:
            spent = usagedb.usage_by_key(usagedb.target(home, self.settings.config), rates.day_start(self.rates.clock()))
        except Exception as e:  # a broken ledger must not stop the gateway; limits start afresh
            log.warning("today's usage of the client keys could not be read from the ledger: %s", e)
            spent = {}
        now = self.rates.clock()
        day = (rates.day_start(now), rates.next_day(now))
        for key_id, (_, tokens) in spent.items():
            self.rates.seed_day(key_id, tokens)
            if self.cluster is not None:
                self.cluster.store.seed_day(key_id, tokens, day)

    # --- what ClientAuth asks ------------------------------------------------------------------
    def _fresh(self) -> KeyStore | None:
        if self.store is not None:
            try:
                self.store.reload_if_changed()
            except KeysError as e:
                log.warning("%s", e)
        return self.store

    def defined(self) -> bool:
        """Whether any client key exists (then `auth_mode = "auto"` asks for a key on loopback too)."""
        store = self._fresh()
        return bool(store is not None and store.keys)

    def find(self, presented: list[str]) -> ClientKey | None:
        store = self._fresh()
        if store is None:
            return None
        for key in presented:
            if (record := store.find(key)) is not None:
                return record
        return None

    async def admit(self, key: ClientKey) -> rates.Refusal | None:
        """Counts the request against the key's limits: across replicas while the shared store
        is reachable, else in this process."""
        shared = self.shared
        if shared is not None and (key.rpm or key.tpm or key.daily_tokens):
            now = self.rates.clock()
            limits = (key.rpm or 0, key.tpm or 0, key.daily_tokens or 0)
            found = await shared.admit(key.id, limits, self.rates.window, now, (rates.day_start(now), rates.next_day(now)))
            if found is None:
                return None
            if found is not False:
                return self.rates.refusal(key, *found)
        return self.rates.admit(key)

    # --- a Monitor sink --------------------------------------------------------------------------
    def observe(self, flow: http.HTTPFlow, t: trace.Trace) -> None:
        if t.key_id and t.key_id != ADMIN and t.usage is not None:
            tokens = t.usage.input_tokens + t.usage.output_tokens
            self.rates.spend(t.key_id, tokens)
            if (shared := self.shared) is not None and tokens > 0:
                now = self.rates.clock()
                shared.spend(t.key_id, tokens, now, (rates.day_start(now), rates.next_day(now)))
