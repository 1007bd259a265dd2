"""The offline tokenizer is BERT's uncased WordPiece vocabulary: shards tokenized offline
feed a bert-base-uncased encoder (the paper preset) with the ids it was trained on."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from transformers import BertTokenizer

from deepfusion.artifacts.dataset import ShardDataset
from deepfusion.config import ConfigError, MultimodalLSTMConfig
from deepfusion.hashing import sha256_file
from deepfusion.media.text import load_tokenizer, tokenize
from deepfusion.pretrained import BERT_UNCASED, OFFLINE_VOCAB_SHA256, offline_model_dir, vocabulary

# bert-base-uncased's published facts (its vocab.txt and tokenizer_config.json on the hub)
BERT_SIZE = 30522
BERT_SPECIAL = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}
# The example of transformers' BERT documentation: tokenizer("Hello, my dog is cute")
HELLO_DOG = [101, 7592, 1010, 2026, 3899, 2003, 10140, 102]


def test_the_packaged_vocabulary_is_bert_uncased():
    vocab_file = offline_model_dir() / "vocab.txt"
    assert sha256_file(vocab_file) == OFFLINE_VOCAB_SHA256
    tokens = vocab_file.read_text(encoding="utf-8").splitlines()
    assert len(tokens) == BERT_SIZE
    assert {t: tokens.index(t) for t in BERT_SPECIAL} == BERT_SPECIAL
    assert tokens[1] == "[unused0]" and tokens[999] == "!" and tokens[1996] == "the"
    fast = load_tokenizer("offline")
    assert fast.get_vocab_size() == BERT_SIZE
    assert [int(i) for i in tokenize("offline", ["Hello, my dog is cute"], 64)[0]] == HELLO_DOG
    assert vocabulary("bert-base-uncased") == vocabulary("offline") == BERT_UNCASED
    assert vocabulary("roberta-base") == "roberta-base"


def test_meld_text_gets_the_ids_of_berts_own_tokenizer(shared_data):
    """Every MELD dev utterance: the offline fast tokenizer (what preprocessing runs) gives
    exactly the ids of transformers' BertTokenizer (the methodology's tokenizer) built on
    the uncased vocabulary with bert-base-uncased's settings."""
    with open(shared_data / "meld" / "dev_sent_emo.csv", encoding="utf-8") as f:
        texts = [row["Utterance"] for row in csv.DictReader(f)]
    assert len(texts) > 1000
    bert = BertTokenizer(str(offline_model_dir() / "vocab.txt"), do_lower_case=True)
    expected = bert(texts, truncation=True, max_length=128)["input_ids"]
    ours = tokenize("offline", texts, 128)
    mismatched = [t for t, a, b in zip(texts, ours, expected) if list(map(int, a)) != b]
    assert not mismatched, mismatched[:5]
    assert sum(len(ids) for ids in expected) > 10 * len(texts)  # real text, not empty rows
    assert np.mean([bert.unk_token_id in ids for ids in expected]) < 0.01


def test_shards_check_the_vocabulary_not_the_name(tmp_path):
    manifest = {"label_map": {e: i for i, e in enumerate(
        ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"])},
        "kind": "meld", "media_by_sample": {"audio+text": 3}, "audio": {"sample_rate": 16000},
        "speakers": {}}
    paper = MultimodalLSTMConfig(preset="paper", audio_encoder={"load_weights": False},
                                 text_encoder={"load_weights": False})
    for tokenizer in ("offline", "bert-base-uncased"):
        data = ShardDataset(tmp_path, {**manifest, "text": {"tokenizer": tokenizer}})
        assert data.resolve_model_config(paper).text_encoder.name == "bert-base-uncased"
    other = ShardDataset(tmp_path, {**manifest, "text": {"tokenizer": "roberta-base"}})
    with pytest.raises(ConfigError, match="another vocabulary"):
        other.resolve_model_config(paper)
