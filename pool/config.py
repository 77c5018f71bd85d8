"""`config.toml`: read with tomllib, validated with pydantic, created with defaults when missing."""

from __future__ import annotations

import os
import secrets
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .files import keep_private, write_atomic
from .mapping import lookup

DEFAULT_CLIENT_VERSION = "4.3.0"

AuthMode = Literal["off", "strict", "all_except_health", "auto"]
Scheduling = Literal["balance", "cache_first", "performance_first"]


class ConfigError(Exception):
    """A config file that cannot be used; the message names the file and the key."""


class _Section(BaseModel):
    # A typo in a key must not be ignored silently: `alow_lan_access = true` would look safe.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ProxyConfig(_Section):
    port: int = Field(8045, ge=0, le=65535)
    allow_lan_access: bool = False
    auth_mode: AuthMode = "auto"
    api_key: str = ""
    request_timeout: float = Field(600, gt=0)

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
    upstreams: Upstreams = Field(default_factory=Upstreams)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    usage: UsageConfig = Field(default_factory=UsageConfig)

    def to_toml(self) -> bytes:
        return tomli_w.dumps(self.model_dump(mode="json")).encode()


# The reverse target is never contacted: every flow is answered by the gateway or its relay.
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
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        config = Config(proxy=ProxyConfig(api_key=new_api_key()))
        write_atomic(path, config.to_toml())
        return config
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    keep_private(path)  # it holds the admin key and the OAuth client secret
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return parse(data, source=str(path))


def parse(data: dict[str, Any], source: str = "config.toml") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{source}: " + "; ".join(_describe(err) for err in e.errors())) from None


def _describe(error: Any) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    message = error["msg"].removeprefix("Value error, ")
    return f"{key}: {message} (got {error['input']!r})"


def check_startable(config: Config) -> None:
    """Refuse the settings that would expose the gateway or lock everyone out."""
    proxy = config.proxy
    mode = proxy.effective_auth_mode
    if proxy.allow_lan_access and mode == "off":
        raise ConfigError(
            "proxy.allow_lan_access = true with auth_mode = \"off\" would let anyone on the network "
            "use your accounts; set auth_mode to \"all_except_health\" (or \"auto\") or turn off LAN access"
        )
    if mode != "off" and not proxy.api_key:
        raise ConfigError(f"proxy.auth_mode is {mode!r} but proxy.api_key is empty; set an api_key")
