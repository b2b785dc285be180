"""What is it? The candidates as given, what each GGUF file says about itself, and this machine.

A candidate that cannot be read becomes a row with its one-sentence error, and the others
go on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from .. import defaults
from ..build import cpu_features, cpu_name
from ..errors import UserError
from ..models import ResolvedModel, resolve
from .memory import GIB, MIB


@dataclass(frozen=True)
class Candidate:
    """One candidate as given, resolved to a model or to the reason it could not be."""

    spec: str
    model: ResolvedModel | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.model is not None


def load_candidates(specs: Sequence[str | ResolvedModel]) -> list[Candidate]:
    """Resolve each spec; a bad one is kept with its error so the table can show it."""
    out = []
    for spec in specs:
        if isinstance(spec, ResolvedModel):  # already resolved: nothing to read again
            out.append(Candidate(spec.spec, spec))
            continue
        try:
            out.append(Candidate(str(spec), resolve(spec)))
        except UserError as exc:
            out.append(Candidate(str(spec), None, str(exc).splitlines()[0]))
    return out


def usable(candidates: Sequence[Candidate]) -> list[ResolvedModel]:
    return [c.model for c in candidates if c.model is not None]


def model_card(candidate: Candidate) -> dict:
    """One table row: what the GGUF metadata says, or the status of a bad candidate."""
    if candidate.model is None:
        return {"model": candidate.spec, "status": candidate.error}
    m = candidate.model
    info = m.info
    return {
        "model": m.spec,
        "status": "ok",
        "file": m.path.name,
        "architecture": info.architecture,
        "parameters (M)": round(info.parameters / 1e6, 1),
        "layers": info.layers,
        "trained context": info.context_length,
        "vocabulary": info.vocab_size,
        "quant": info.quant_type,
        "bits/weight": round(info.bits_per_weight, 2),
        "size (MiB)": round(info.file_size / MIB, 1),
        "chat template": "yes (instruction-tuned)" if info.chat_template else "no (base model)",
        "license": info.license or "not stated",
    }


def model_cards(candidates: Sequence[Candidate]) -> pd.DataFrame:
    return pd.DataFrame([model_card(c) for c in candidates]).set_index("model")


# --------------------------------------------------------------------------- hardware


@dataclass(frozen=True)
class Hardware:
    cpu: str
    cores: int
    ram_total: int
    ram_available: int
    cpu_features: list[str]
    accelerator: str


def hardware() -> Hardware:
    """This machine: RAM (total and available now), cores and the SIMD extensions ggml uses."""
    import psutil

    vm = psutil.virtual_memory()
    return Hardware(
        cpu=cpu_name(),
        cores=defaults.cores(),  # the cores this process may use
        ram_total=int(vm.total),
        ram_available=int(vm.available),
        cpu_features=cpu_features(),
        accelerator="none: llama.cpp is built for the CPU only here",
    )


def hardware_table(hw: Hardware) -> pd.DataFrame:
    rows = {
        "CPU": hw.cpu,
        "cores": hw.cores,
        "RAM total (GiB)": round(hw.ram_total / GIB, 1),
        "RAM available now (GiB)": round(hw.ram_available / GIB, 1),
        "SIMD extensions": " ".join(hw.cpu_features) or "none detected",
        "accelerator": hw.accelerator,
    }
    return pd.DataFrame({"value": rows})
