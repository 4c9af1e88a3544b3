"""Multi-turn conversation memory in the hot tier (Redis), shared by every agent replica and kept
across restarts: the turns of a conversation, bounded by a token budget by summarizing the
oldest ones.

Keys, per conversation (``<p>`` is ``key_prefix``, ``zhongshu:conv`` by default; the braces are
a hash tag, so the scripts touch one Redis Cluster slot):

- ``<p>:{<tenant>:<conversation>}:turns``: a list of turns (msgspec JSON), oldest first.
- ``<p>:{<tenant>:<conversation>}:ids``: a set of the ids of every turn ever appended, also of
  turns since summarized or reset, so a redelivered command never adds its turn again.
- ``<p>:{<tenant>:<conversation>}:meta``: a hash, ``summary`` (of the turns compacted away)
  and ``gen``, bumped by every compaction and reset (never by an append).

All three share one TTL (7 days by default), refreshed by every append: an idle conversation
is forgotten, an active one is kept.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable

import msgspec
from redis.asyncio import Redis


class Turn(msgspec.Struct, frozen=True, kw_only=True):
    """One message of a conversation. ``id`` is deterministic (the command's envelope id plus
    ``:user`` or ``:assistant``), which is what makes appending idempotent."""

    id: str
    role: str
    content: str
    at: float


class Conversation(msgspec.Struct, frozen=True, kw_only=True):
    summary: str = ""
    turns: tuple[Turn, ...] = ()


Summarize = Callable[[str, tuple[Turn, ...]], Awaitable[str]]
"""``(previous summary, oldest turns) -> new summary``: usually a model call."""

# Hangul syllables, CJK punctuation, kana, CJK ideographs (with extension A, compatibility and
# the supplementary planes) and full-width forms.
_CJK = re.compile(
    "[\u1100-\u11ff\u2e80-\u2fdf\u3000-\u30ff\u3100-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef\U00020000-\U0003ffff]"
)

# A turn also costs its role and the chat template's separators.
TURN_OVERHEAD_TOKENS = 4


def estimate_tokens(text: str) -> int:
    """A cheap, tokenizer-free estimate of the tokens of ``text``: each CJK character counts as
    one (Chinese models' tokenizers give about 0.6 to 1.5 per character, OpenAI's up to 2), and
    any other text one per 4 characters (the usual rule of thumb for English and code). It only
    decides when to summarize, so being off by a few tens of percent costs little."""
    cjk = len(_CJK.findall(text))
    return cjk + math.ceil((len(text) - cjk) / 4)


def turn_tokens(turn: Turn) -> int:
    return estimate_tokens(turn.content) + TURN_OVERHEAD_TOKENS


# KEYS: 1 turns, 2 ids, 3 meta. ARGV: 1 TTL ms, then (id, encoded turn) pairs.
# Returns how many turns were added (a turn whose id was ever stored is skipped).
_APPEND = """
local added = 0
for i = 2, #ARGV, 2 do
  if redis.call('SADD', KEYS[2], ARGV[i]) == 1 then
    redis.call('RPUSH', KEYS[1], ARGV[i + 1])
    added = added + 1
  end
end
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
return added
"""

# KEYS: 1 turns, 2 ids, 3 meta. ARGV: 1 TTL ms, 2 the gen read, 3 turns summarized, 4 summary.
# Appends only push to the tail; only a compaction or a reset changes the head, and both bump
# gen. So an unchanged gen proves the oldest turns are those summarized, and the turns
# appended meanwhile stay (they are after them). Returns 1 if compacted, 0 if gen moved on.
_COMPACT = """
local gen = tonumber(redis.call('HGET', KEYS[3], 'gen') or '0')
local n = tonumber(ARGV[3])
if gen ~= tonumber(ARGV[2]) or redis.call('LLEN', KEYS[1]) < n then return 0 end
redis.call('LTRIM', KEYS[1], n, -1)
redis.call('HSET', KEYS[3], 'summary', ARGV[4], 'gen', gen + 1)
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
return 1
"""

# KEYS: 1 turns, 2 ids, 3 meta. ARGV: 1 TTL ms. The ids stay, so a command redelivered after
# /reset does not bring its turn back; gen moves on, so a compaction in progress is refused.
_RESET = """
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[3], 'summary')
redis.call('HINCRBY', KEYS[3], 'gen', 1)
for i = 2, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
return 1
"""

# KEYS: 1 turns, 2 meta. Returns {turns, summary or nil, gen or nil}: one command read atomically,
# where a MULTI of two cost the client four to pack and parse (the memory is read every answer).
_LOAD = """
local meta = redis.call('HMGET', KEYS[2], 'summary', 'gen')
return {redis.call('LRANGE', KEYS[1], 0, -1), meta[1], meta[2]}
"""

_turn_decoder = msgspec.json.Decoder(Turn)


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


class ConversationMemory:
    """The turns of each conversation, shared by all replicas. Appends are atomic and
    idempotent by turn id; compaction is optimistic (see ``_COMPACT``), so two replicas
    compacting at once, or a turn appended during a (slow) summarization, lose nothing."""

    def __init__(
        self,
        redis: Redis,
        *,
        ttl_s: float = 7 * 24 * 3600,
        token_budget: int = 3000,
        key_prefix: str = "zhongshu:conv",
    ) -> None:
        if ttl_s <= 0 or token_budget <= 0:
            raise ValueError("ttl_s and token_budget must be > 0")
        self._redis = redis
        self._ttl_ms = max(1, round(ttl_s * 1000))
        self.token_budget = token_budget
        self._prefix = key_prefix
        self._append = redis.register_script(_APPEND)
        self._compact = redis.register_script(_COMPACT)
        self._reset = redis.register_script(_RESET)
        self._load = redis.register_script(_LOAD)

    def keys(self, tenant: str, conversation_id: str) -> list[str]:
        """turns, ids, meta."""
        base = f"{self._prefix}:{{{tenant}:{conversation_id}}}"
        return [f"{base}:turns", f"{base}:ids", f"{base}:meta"]

    async def load(self, tenant: str, conversation_id: str) -> Conversation:
        conversation, _ = await self._snapshot(tenant, conversation_id)
        return conversation

    async def append(self, tenant: str, conversation_id: str, *turns: Turn) -> None:
        """Add ``turns`` at the end, skipping any whose id was already stored; refreshes the
        TTL of the conversation."""
        if not turns:
            return
        args: list[str | bytes | int] = [self._ttl_ms]
        for turn in turns:
            args += [turn.id, msgspec.json.encode(turn)]
        await self._append(keys=self.keys(tenant, conversation_id), args=args)

    def over_budget(self, conversation: Conversation, *added: Turn) -> bool:
        """Whether ``conversation`` with ``added`` turns exceeds ``token_budget``: what
        ``compact`` checks, on a copy the caller already holds."""
        turns = (*conversation.turns, *added)
        return estimate_tokens(conversation.summary) + sum(map(turn_tokens, turns)) > (
            self.token_budget
        )

    async def compact(self, tenant: str, conversation_id: str, summarize: Summarize) -> bool:
        """When the summary and turns exceed ``token_budget``, fold the oldest turns into the
        summary, keeping the newest turns that fit in half the budget (at least the last one,
        which is usually the question being answered). Returns True if it compacted; False
        if nothing needed it, or another replica compacted or reset first (its result stands).
        """
        conversation, gen = await self._snapshot(tenant, conversation_id)
        if not self.over_budget(conversation):
            return False
        keep, kept_tokens = 0, 0
        for turn in reversed(conversation.turns):
            kept_tokens += turn_tokens(turn)
            if keep and kept_tokens > self.token_budget // 2:
                break
            keep += 1
        oldest = conversation.turns[: len(conversation.turns) - keep]
        if not oldest:
            return False  # the summary alone is over budget: summarizing it again gains little
        summary = await summarize(conversation.summary, oldest)
        done = await self._compact(
            keys=self.keys(tenant, conversation_id),
            args=[self._ttl_ms, gen, len(oldest), summary],
        )
        return bool(int(done))

    async def reset(self, tenant: str, conversation_id: str) -> None:
        """``/reset``: forget the summary and the turns."""
        await self._reset(keys=self.keys(tenant, conversation_id), args=[self._ttl_ms])

    async def _snapshot(self, tenant: str, conversation_id: str) -> tuple[Conversation, int]:
        turns_key, _, meta_key = self.keys(tenant, conversation_id)
        raw_turns, summary, gen = await self._load(keys=[turns_key, meta_key])
        turns = tuple(_turn_decoder.decode(raw) for raw in raw_turns)
        return Conversation(summary=_text(summary), turns=turns), int(gen or 0)
