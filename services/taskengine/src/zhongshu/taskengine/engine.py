"""What every handler of the engine shares: its resources (outputs go through the runtime's
``Outbox``, in the input's tenant and correlation under deterministic ids)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from zhongshu.runtime.liveconfig import ConfigSource
from zhongshu.taskengine.adapters.definitions import DefinitionStore
from zhongshu.taskengine.adapters.runlog import RunLog
from zhongshu.taskengine.adapters.trigger_table import TriggerTable
from zhongshu.taskengine.settings import TaskEngineSettings

SOURCE = "zhongshu/taskengine"


@dataclass(frozen=True)
class Engine:
    settings: TaskEngineSettings
    runlog: RunLog
    definitions: DefinitionStore
    triggers: TriggerTable
    config: ConfigSource
    http: httpx.AsyncClient
