"""What a resolved model is: a file's own metadata (``ModelInfo``) and a model ready to use
(``ResolvedModel``). Plain records with no imports of the package, so that the modules that only
read a model (the memory estimate, the synthetic-weights writer) need not import the resolver."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ModelInfo:
    """What a GGUF file says about itself (read with the ``gguf`` package)."""

    name: str
    architecture: str
    parameters: int
    layers: int
    context_length: int
    embedding_length: int
    head_count: int
    head_count_kv: int
    vocab_size: int
    quant_type: str
    bits_per_weight: float
    file_size: int
    chat_template: bool
    license: str


@dataclass(frozen=True)
class ResolvedModel:
    """A model file ready to use, with where it came from and what it is."""

    spec: str
    path: Path
    source: str
    sha256: str
    info: ModelInfo
    label: str = ""  # how tables and figures name it; defaults to the quant type
    provenance: dict = field(default_factory=dict)

    @property
    def display(self) -> str:
        return self.label or self.info.quant_type
