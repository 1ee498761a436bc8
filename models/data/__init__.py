"""The TailorBench dataset format: loading, validation with quarantine, splits, encodings, sampling."""

from models.data.encoding import EncodedInteractions, encode_interactions, encode_item_tags
from models.data.loader import TailorBenchDataset, load_dataset, write_dataset
from models.data.quarantine import FileReport, ValidationReport
from models.data.sampler import CandidateSample, sample_candidates
from models.data.split import SPLIT_CODES, assign_leave_two_out

__all__ = [
    "SPLIT_CODES",
    "CandidateSample",
    "EncodedInteractions",
    "FileReport",
    "TailorBenchDataset",
    "ValidationReport",
    "assign_leave_two_out",
    "encode_interactions",
    "encode_item_tags",
    "load_dataset",
    "sample_candidates",
    "write_dataset",
]
