"""Text: token ids from the tokenizer behind a model name (``deepfusion.pretrained``
finds it: the packaged offline all-MiniLM-L6-v2, a local folder or the hub), and the
dialogue context a model trained with ``text.context_turns`` reads."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from deepfusion.pretrained import OFFLINE, TextModelUnavailable, resolve_text_model


@functools.lru_cache(maxsize=8)
def load_tokenizer(name: str):
    """The fast (Rust) tokenizer behind ``name``: a ``tokenizers.Tokenizer``.

    A folder with ``tokenizer.json`` (the offline model, any saved fast tokenizer) is read
    by ``tokenizers`` directly; that skips importing transformers and torch, seconds per
    Ray Data worker. Anything else goes through ``AutoTokenizer`` and yields the same
    backend object that transformers' fast tokenizers wrap.
    """
    resolved = resolve_text_model(name)
    tokenizer_file = Path(resolved) / "tokenizer.json"
    if tokenizer_file.is_file():
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(tokenizer_file))
    else:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(resolved).backend_tokenizer
        except OSError as err:
            raise TextModelUnavailable(
                f"cannot load tokenizer {name!r}: {err}. Without network access use "
                f"tokenizer: {OFFLINE!r} (the packaged all-MiniLM-L6-v2) or a local model folder."
            ) from None
    tokenizer.no_padding()
    return tokenizer


def dialogue_context(previous: list[tuple[str, str]], turns: int) -> str:
    """The ``turns`` utterances before this one, as ``speaker: text``, most recent first
    (so that truncation drops the oldest). ``previous`` is in dialogue order. Only what
    was said and by whom: never an annotation."""
    recent = [f"{speaker}: {text}" for speaker, text in previous[-turns:]] if turns else []
    return " | ".join(reversed(recent))


def utterance_text(text: str, speaker: str | None, speaker_names: bool) -> str:
    """What the tokenizer reads as the utterance: ``speaker: text`` with
    ``text.speaker_names`` (and a speaker), the text alone otherwise."""
    speaker = (speaker or "").strip()
    return f"{speaker}: {text}" if speaker_names and speaker else text


def tokenize(name: str, texts: list[str], max_length: int, contexts: list[str] | None = None) -> list[np.ndarray]:
    """Token ids (with special tokens, truncated to ``max_length``, unpadded) per text.

    With ``contexts`` each text is encoded as a pair, ``[CLS] text [SEP] context [SEP]``,
    the way BERT-style models take a second segment; the context is cut first.
    """
    tokenizer = load_tokenizer(name)
    if contexts is None:
        tokenizer.enable_truncation(max_length)
        return [np.asarray(e.ids, dtype=np.int32) for e in tokenizer.encode_batch(list(texts))]
    if len(contexts) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(contexts)} contexts")
    # longest_first trims the longer segment token by token: the context's oldest turns
    # go first, and an utterance keeps its words unless it alone fills the budget.
    tokenizer.enable_truncation(max_length, strategy="longest_first")
    return [np.asarray(e.ids, dtype=np.int32) for e in tokenizer.encode_batch(list(zip(texts, contexts)))]


MAX_CONTEXT_TURNS = 50


def parse_context(raw: str, max_chars: int) -> tuple[tuple[str, str], ...]:
    """A dialogue context as JSON: a list of ``{"speaker": ..., "text": ...}``, oldest
    first (the HTTP ``context`` field and a manifest's ``context`` column). Raises
    ``ValueError`` saying what is wrong."""
    if not raw.strip():
        return ()
    try:
        turns = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"not JSON ({err.msg} at character {err.pos})") from None
    if not isinstance(turns, list) or len(turns) > MAX_CONTEXT_TURNS:
        raise ValueError(f"expected a JSON list of at most {MAX_CONTEXT_TURNS} turns")
    parsed = []
    for i, turn in enumerate(turns):
        if not (isinstance(turn, dict) and isinstance(turn.get("text"), str)
                and isinstance(turn.get("speaker", ""), str)):
            raise ValueError(f"turn {i}: expected {{\"speaker\": str, \"text\": str}}, got {turn!r:.80}")
        if len(turn["text"]) > max_chars:
            raise ValueError(f"turn {i}: {len(turn['text'])} characters; the limit is {max_chars}")
        parsed.append((turn.get("speaker", ""), turn["text"]))
    return tuple(parsed)
