"""Data sets and partitioners shared by the methods.

Images: :func:`load_dataset` (mnist, digits, cifar10, cifar100). Partitions across workers:
:func:`partition` (iid, dirichlet, label-pattern, unequal, long-tailed) and :func:`long_tailed_indices`.
Text: :func:`load_corpus`, tokenizers and :class:`SequenceDataset`.
"""
from ml.data.images import DATASETS, ImageDataset, default_data_dir, load_dataset
from ml.data.partition import (
    PROFILES, SCHEMES, Partition, label_pattern_fractions, long_tailed_indices, partition,
)
from ml.data.text import (
    ByteTokenizer, CharTokenizer, SequenceDataset, load_corpus, shard, tokenizer_from_dict,
    train_val_split,
)

__all__ = [
    "ByteTokenizer", "CharTokenizer", "SequenceDataset", "load_corpus", "shard",
    "tokenizer_from_dict", "train_val_split",
    "DATASETS", "PROFILES", "SCHEMES", "ImageDataset", "Partition", "default_data_dir",
    "label_pattern_fractions", "load_dataset", "long_tailed_indices", "partition",
]
