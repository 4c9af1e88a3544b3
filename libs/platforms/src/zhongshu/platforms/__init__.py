"""One client per platform: ``FeishuClient`` (:mod:`.feishu`) and ``DingTalkClient``
(:mod:`.dingtalk`). Each fetches and caches the apps' access tokens (:mod:`.tokens`, in Redis
when given one), calls with a token that is fetched again once when the platform refuses it, and
answers with values (:mod:`.results`); the base URLs are one settings mixin (:mod:`.settings`).
"""

from zhongshu.platforms.calls import Credentials
from zhongshu.platforms.dingtalk import DingTalkClient
from zhongshu.platforms.feishu import FeishuClient
from zhongshu.platforms.settings import PlatformURLs
from zhongshu.platforms.tokens import TokenCache

__all__ = ["Credentials", "DingTalkClient", "FeishuClient", "PlatformURLs", "TokenCache"]
