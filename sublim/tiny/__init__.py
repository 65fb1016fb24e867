"""A tiny Llama built and pretrained locally, loadable by path like a hub model (tests, CPU demo)."""
from sublim.tiny.model import TinyModelSpec, build_tiny_model, read_spec_record, spec_from_dict, spec_record

__all__ = ["TinyModelSpec", "build_tiny_model", "read_spec_record", "spec_from_dict", "spec_record"]
