"""The agent's LLM client: OpenAI-compatible chat completions (streamed or not, with tools)
across providers in priority order, with retries and fallback inside one time budget."""

from zhongshu.agent.llm.client import Gate, LLMClient
from zhongshu.agent.llm.errors import LLMError, LLMGaveUp
from zhongshu.agent.llm.types import (
    AttemptRecord,
    ChatMessage,
    ChatRequest,
    ChatResult,
    Provider,
    ToolCall,
    ToolSpec,
    Usage,
)

__all__ = [
    "AttemptRecord",
    "ChatMessage",
    "ChatRequest",
    "ChatResult",
    "Gate",
    "LLMClient",
    "LLMError",
    "LLMGaveUp",
    "Provider",
    "ToolCall",
    "ToolSpec",
    "Usage",
]
