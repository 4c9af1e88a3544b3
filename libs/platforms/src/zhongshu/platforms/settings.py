"""The platforms' base URLs, one settings mixin for every service that calls them, read from the
variables the services have always used (tests and the sandbox point them at fakes)::

    class NotifierSettings(ServiceSettings, PlatformURLs): ...
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings

FEISHU_BASE_ENV = "FEISHU_BASE_URL"
DINGTALK_API_ENV = "DINGTALK_API_URL"
DINGTALK_OAPI_ENV = "DINGTALK_OAPI_URL"
FEISHU_BASE_URL = "https://open.feishu.cn"  # Lark: https://open.larksuite.com
DINGTALK_API_URL = "https://api.dingtalk.com"
DINGTALK_OAPI_URL = "https://oapi.dingtalk.com"

_ENV = {
    "feishu_base_url": FEISHU_BASE_ENV,
    "dingtalk_api_url": DINGTALK_API_ENV,
    "dingtalk_oapi_url": DINGTALK_OAPI_ENV,
}


class PlatformURLs(BaseSettings):
    feishu_base_url: str = Field(
        default=FEISHU_BASE_URL,
        validation_alias=AliasChoices(FEISHU_BASE_ENV, "feishu_base_url"),
        description="Feishu (or Lark: https://open.larksuite.com) open platform: tokens, sends, "
        "contact look-ups, the long connection's endpoint",
    )
    dingtalk_api_url: str = Field(
        default=DINGTALK_API_URL,
        validation_alias=AliasChoices(DINGTALK_API_ENV, "dingtalk_api_url"),
        description="DingTalk OpenAPI: app access tokens, robot and AI-card sends, the Stream "
        "gateway (/v1.0/gateway/connections/open)",
    )
    dingtalk_oapi_url: str = Field(
        default=DINGTALK_OAPI_URL,
        validation_alias=AliasChoices(DINGTALK_OAPI_ENV, "dingtalk_oapi_url"),
        description="DingTalk legacy oapi: /gettoken, /topapi/v2/user/get, custom robot webhooks",
    )

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Self:
        """The URLs named in ``environ`` only (not the process environment), defaults for the
        rest: what ``zhongshu doctor`` checks with the environment it was given."""
        given: dict[str, Any] = {n: environ[e] for n, e in _ENV.items() if environ.get(e)}
        return cls.model_construct(**given)
