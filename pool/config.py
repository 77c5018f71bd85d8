"""`config.toml`: read with tomllib, validated with pydantic, created with defaults when missing."""

from __future__ import annotations

import os
import re
import secrets
import tomllib
from collections.abc import Callable
from pathlib import Path
from collections.abc import Callable
from typing import Annotated, Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from .files import keep_private, locked, write_atomic
from .mapping import lookup
from .transport import check_proxy
from .urls import check_service_url, mask_url

DEFAULT_CLIENT_VERSION = "4.3.0"
# Seconds one upstream attempt may take to its status and first event, and an answer may stay
# silent mid-way, when the config does not say (never above its request_timeout).
DEFAULT_WAITS = {"first_byte_timeout": 60, "idle_timeout": 60}

AuthMode = Literal["off", "strict", "all_except_health", "auto"]
Scheduling = Literal["balance", "cache_first", "performance_first"]


class ConfigError(Exception):
    """A config file that cannot be used; the message names the file and the key. `fields` maps
    each key at fault (dotted, `routing.max_attempts`) to what is wrong with it, for a form."""

    def __init__(self, message: str, fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.fields = fields or {}


class _Section(BaseModel):
    # A typo in a key must not be ignored silently: `alow_lan_access = true` would look safe.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ProxyConfig(_Section):
    port: int = Field(8045, ge=0, le=65535)
    allow_lan_access: bool = False
    auth_mode: AuthMode = "auto"
    api_key: str = ""
    request_timeout: float = Field(600, gt=0)
    # Host names served besides the loopback names ("name" for any port, or "name:port"): the
    # names LAN clients or a reverse proxy in front use. Anything else is refused (DNS rebinding).
    allowed_hosts: list[str] = Field(default_factory=list)
    # Browser origins ("http://localhost:5173") whose pages may call the gateway; others are refused.
    cors_origins: list[str] = Field(default_factory=list)
    max_body_mb: float = Field(64, gt=0, le=4096)  # largest request body; image prompts are big
    max_header_kb: int = Field(64, ge=1, le=1024)  # largest request head (request line and headers)
    max_connections: int = Field(256, ge=1, le=100_000)  # client connections served at once
    client_timeout: float = Field(30, gt=0)  # seconds to send a request's head, and again its body, once begun
    keepalive_timeout: float = Field(75, gt=0)  # seconds an idle connection may wait for its next request

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            if not _HOST.fullmatch(host):
                raise ValueError(f"{host!r} is not a host name or host:port (no scheme, no path)")
        return [host.lower() for host in hosts]

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if not _ORIGIN.fullmatch(origin):
                raise ValueError(f"{origin!r} is not an origin like \"http://localhost:5173\" (scheme, host, port; no path)")
        return [origin.lower() for origin in origins]

    @property
    def max_body(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    first_byte_timeout: float = Field(DEFAULT_WAITS["first_byte_timeout"], gt=0)
    idle_timeout: float = Field(DEFAULT_WAITS["idle_timeout"], gt=0)

    @model_validator(mode="before")
    @classmethod
    def _waits_fit(cls, data: Any) -> Any:
        """Unset waits default to at most request_timeout: lowering that alone stays valid."""
        limit = data.get("request_timeout") if isinstance(data, dict) else None
        if isinstance(limit, int | float) and not isinstance(limit, bool) and limit > 0:
            data = {**{k: min(v, limit) for k, v in DEFAULT_WAITS.items()}, **data}
        return data

    @field_validator("first_byte_timeout", "idle_timeout")
    @classmethod
    def _within_request_timeout(cls, value: float, info: ValidationInfo) -> float:
        limit = info.data.get("request_timeout")
        if limit is not None and value > limit:
            raise ValueError(f"must not be above request_timeout ({limit:g} s)")
        return value

    @property
    def listen_host(self) -> str:
        return "0.0.0.0" if self.allow_lan_access else "127.0.0.1"

    @property
    def effective_auth_mode(self) -> Literal["off", "strict", "all_except_health"]:
        if self.auth_mode == "auto":
            return "all_except_health" if self.allow_lan_access else "off"
        return self.auth_mode


class RoutingConfig(_Section):
    scheduling: Scheduling = "balance"
    sticky_ttl: int = Field(3600, ge=0)
    max_attempts: int = Field(3, ge=1, le=20)
    # Where agents' side requests (session titles, summaries, warm-ups, quota probes) go; "" = off.
    background_model: str = ""


class NetworkConfig(_Section):
    # Every upstream call goes through this proxy unless an account names its own; "" = the
    # proxy environment variables (HTTPS_PROXY, ...); "direct" = none. NO_PROXY always holds.
    proxy: str = ""

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, url: str) -> str:
        return check_proxy(url) if url else url


class QuotaConfig(_Section):
    refresh_interval: float = Field(600, ge=0)  # seconds between quota fetches per Google account (+-10 %); 0: only on demand
    protect_below: float = Field(10, ge=0, le=100)  # percent left under which an account is used last for a model
    protect_models: dict[str, Annotated[float, Field(ge=0, le=100)]] = Field(default_factory=dict)  # per model, globs

    def threshold(self, model: str) -> float:
        """The protection threshold for `model`, as a fraction; the most specific glob wins."""
        pattern = lookup(model, {p: p for p in self.protect_models})
        return (self.protect_below if pattern is None else self.protect_models[pattern]) / 100


class MonitorConfig(_Section):
    max_flows: int = Field(2000, ge=1)  # flows mitmweb keeps; the oldest finished ones go first


class UsageConfig(_Section):
    retention_days: int = Field(30, ge=1)  # days the usage ledger keeps its rows
    # "postgresql://user:password@host:5432/db": the ledger in PostgreSQL, one table for every
    # replica; "" = SQLite under the data dir.
    database_url: str = ""

    @field_validator("database_url")
    @classmethod
    def _database(cls, url: str) -> str:
        return check_service_url(url, ("postgresql", "postgres"), "postgresql://user:password@host:5432/switchyard") if url else url


REDIS_EXAMPLE = "redis://:password@host:6379/0"
REDIS_ENV = "SWITCHYARD_REDIS_URL"


def check_redis_url(url: str) -> str:
    return check_service_url(url, ("redis", "rediss", "unix"), REDIS_EXAMPLE, host=("redis", "rediss"))


class ClusterConfig(_Section):
    # Replicas that share one pool keep what they must share in this Redis (or env
    # SWITCHYARD_REDIS_URL); "" = this process alone, with local files.
    redis_url: str = ""

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, url: str) -> str:
        return check_redis_url(url) if url else url

    @property
    def effective_redis_url(self) -> str:
        """The config's URL, else the environment's (checked like the file's)."""
        if self.redis_url:
            return self.redis_url
        url = os.environ.get(REDIS_ENV, "").strip()
        if url:
            try:
                check_redis_url(url)
            except ValueError as e:
                reason = f"{e} (got {mask_url(url)!r})"
                raise ConfigError(f"{REDIS_ENV}: {reason}", {"cluster.redis_url": reason}) from None
        return url


class AntigravityUpstream(_Section):
    endpoints: list[str] = Field(
        default_factory=lambda: [
            "https://daily-cloudcode-pa.sandbox.googleapis.com/v1internal",
            "https://daily-cloudcode-pa.googleapis.com/v1internal",
            "https://cloudcode-pa.googleapis.com/v1internal",
        ],
        min_length=1,
    )
    token_url: str = "https://oauth2.googleapis.com/token"
    auth_url: str = "https://accounts.google.com/o/oauth2/v2/auth"  # `accounts login` sends the browser here
    userinfo_url: str = "https://www.googleapis.com/oauth2/v2/userinfo"
    client_id: str = ""
    client_secret: str = ""
    # The Antigravity release the gateway introduces itself as; Google refuses clients it deems
    # too old ("This version of Antigravity is no longer supported").
    client_version: str = Field(DEFAULT_CLIENT_VERSION, pattern=r"^\d+\.\d+\.\d+$")
    platform: str = Field("", pattern=r"^[^()\r\n]*$")  # the User-Agent's platform part; "" = this machine's

    @field_validator("endpoints")
    @classmethod
    def _urls(cls, endpoints: list[str]) -> list[str]:
        for url in endpoints:
            _check_url(url)
        return [url.rstrip("/") for url in endpoints]

    @field_validator("token_url", "auth_url", "userinfo_url")
    @classmethod
    def _token_url(cls, url: str) -> str:
        return _check_url(url)

    @property
    def oauth_client(self) -> tuple[str, str]:
        """The OAuth client: from the config, else from the environment."""
        return (
            self.client_id or os.environ.get("SWITCHYARD_GOOGLE_CLIENT_ID", ""),
            self.client_secret or os.environ.get("SWITCHYARD_GOOGLE_CLIENT_SECRET", ""),
        )


class GeminiUpstream(_Section):
    base_url: str = "https://generativelanguage.googleapis.com"

    @field_validator("base_url")
    @classmethod
    def _url(cls, url: str) -> str:
        return _check_url(url).rstrip("/")


class Upstreams(_Section):
    antigravity: AntigravityUpstream = Field(default_factory=AntigravityUpstream)
    gemini: GeminiUpstream = Field(default_factory=GeminiUpstream)


class Config(_Section):
    proxy: ProxyConfig = Field(default_factory=ProxyConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    quota: QuotaConfig = Field(default_factory=QuotaConfig)
    model_mapping: dict[str, str] = Field(default_factory=dict)
    # A model (or glob) -> the models to serve instead, in order, when no account can serve it.
    fallbacks: dict[str, list[str]] = Field(default_factory=dict)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    upstreams: Upstreams = Field(default_factory=Upstreams)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    usage: UsageConfig = Field(default_factory=UsageConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)

    def to_toml(self) -> bytes:
        return tomli_w.dumps(self.model_dump(mode="json")).encode()


_NAME = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]"
_PORT = r"(?::(?:6553[0-5]|655[0-2]\d|65[0-4]\d\d|6[0-4]\d{3}|[1-5]?\d{1,4}))"
_HOST = re.compile(f"(?:{_NAME}){_PORT}?")
_ORIGIN = re.compile(f"https?://(?:{_NAME}){_PORT}?", re.IGNORECASE)

# The reverse target is never contacted: every flow is answered by the gateway.
PLACEHOLDER_TARGET = "http://127.0.0.1:1"


def reverse_mode(config: Config) -> str:
    """mitmproxy's --mode for this config: reverse proxy on the configured address."""
    return f"reverse:{PLACEHOLDER_TARGET}@{config.proxy.listen_host}:{config.proxy.port}"


def _check_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{url!r} is not an http(s) URL")
    return url


def new_api_key() -> str:
    return "sk-" + secrets.token_hex(16)


def load(path: Path) -> Config:
    """The config at `path`; a missing file is created with defaults and a fresh api_key."""
    data = _read(path)
    if data is None:
        with locked(path):  # two first starts at once must agree on one api_key
            data = _read(path)
            if data is None:
                config = Config(proxy=ProxyConfig(api_key=new_api_key()))
                write_atomic(path, config.to_toml())
                return config
    return parse(data, source=str(path))


def update(path: Path, change: Callable[[dict[str, Any]], None]) -> Config:
    """Applies `change` to the file's TOML document (a plain dict: only the keys the user set)
    and writes it back, all under the lock, so two editors (the CLI, a dashboard) never lose
    each other's change. A result that does not validate raises ConfigError and leaves the
    file as it was. Comments do not survive (tomllib does not keep them)."""
    with locked(path):
        data = _read(path)
        if data is None:
            data = Config(proxy=ProxyConfig(api_key=new_api_key())).model_dump(mode="json")
        change(data)
        config = parse(data, source=str(path))
        write_atomic(path, tomli_w.dumps(data).encode())
    return config


def _read(path: Path) -> dict[str, Any] | None:
    """The file's TOML document, or None when there is no file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    keep_private(path)  # it holds the admin key and the OAuth client secret
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def parse(data: dict[str, Any], source: str = "config.toml") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        problems = [(_key(err), _reason(err)) for err in e.errors()]
        fields: dict[str, str] = {}
        for key, reason in problems:
            fields[key] = f"{fields[key]}; {reason}" if key in fields else reason
        raise ConfigError(f"{source}: " + "; ".join(f"{key}: {reason}" for key, reason in problems), fields) from None


def _key(error: Any) -> str:
    return ".".join(str(part) for part in error["loc"]) or "(top level)"


def _reason(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    message = error["msg"].removeprefix("Value error, ")
    got = error["input"]
    if isinstance(got, str) and "://" in got:  # a service URL's password never goes into a message
        got = mask_url(got)
    return f"{message} (got {got!r})"


def check_startable(config: Config) -> None:
    """Refuse the settings that would expose the gateway or lock everyone out."""
    proxy = config.proxy
    mode = proxy.effective_auth_mode
    if proxy.allow_lan_access and mode == "off":
        reason = (
            "proxy.allow_lan_access = true with auth_mode = \"off\" would let anyone on the network "
            "use your accounts; set auth_mode to \"all_except_health\" (or \"auto\") or turn off LAN access"
        )
        raise ConfigError(reason, {"proxy.auth_mode": reason})
    config.cluster.effective_redis_url  # a bad SWITCHYARD_REDIS_URL stops the start, named
    if mode != "off" and not proxy.api_key:
        reason = f"proxy.auth_mode is {mode!r} but proxy.api_key is empty; set an api_key"
        raise ConfigError(reason, {"proxy.api_key": reason})
