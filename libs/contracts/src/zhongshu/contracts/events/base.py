"""The base of every event: an immutable, past-tense record of something that happened.

Evolution rules (DESIGN.md "Contracts"): readers ignore unknown fields, so within `v1` a change
may only add fields with defaults. A breaking change is a new class with a `.v2` type, accepted
side by side for one release. Closed sets that readers must understand are `Literal`s (a new
member needs a new version); open sets that readers may pass through, such as a platform's
message kinds, are plain strings with their known values listed as constants.
"""

from datetime import datetime
from typing import Annotated, ClassVar

import msgspec

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
"""A datetime with a UTC offset (RFC 3339 on the wire); readers reject naive ones."""


class Event(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Base class of every event; subclasses set `TYPE` to `zhongshu.<area>.<event>.v<n>`."""

    TYPE: ClassVar[str]
