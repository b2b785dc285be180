"""What may you do with it? The chapter's table of open-model licenses, and each candidate's own."""

from __future__ import annotations

import pandas as pd

from ..models import ResolvedModel

# The chapter's table of open-model licenses, restated. The Qwen2.5 row is corrected from Qwen's
# release notes and the 72B model's license: most sizes are Apache 2.0; only 3B and 72B are not.
OPEN_MODEL_LICENSES = (
    ("Meta AI", "LLaMA 3", "custom", "Free until a service passes 700 million users; its outputs may not be used to train other (non-LLaMA) LLMs."),
    ("Microsoft", "Phi-3", "MIT", "Permissive: use, change and redistribute, commercially too, under simple terms."),
    ("Mistral AI", "Mistral", "Apache 2.0", "Permissive: broad commercial rights with few restrictions."),
    ("Alibaba", "Qwen2.5", "Apache 2.0; custom for 3B and 72B", "0.5B, 1.5B, 7B, 14B and 32B are permissive (Apache 2.0). 72B (Qwen License): free until a service passes 100 million monthly active users, and a model trained on its outputs must say 'Built with Qwen'. 3B (Qwen Research License): research and evaluation only."),
    ("Google", "Gemma", "custom", "Free, with usage restrictions; a model trained on Gemma's outputs counts as a Gemma derivative."),
    ("DeepSeek", "DeepSeek-V2", "custom", "Free, with usage restrictions; a model trained on its outputs counts as a DeepSeek derivative."),
)  # fmt: skip

# How the license names found in GGUF files read, and what kind of license each is.
_LICENSE_KINDS = {
    "apache-2.0": ("Apache 2.0", "permissive"),
    "mit": ("MIT", "permissive"),
    "gemma": ("Gemma Terms of Use", "custom"),
    "gemma terms of use": ("Gemma Terms of Use", "custom"),
    "llama3": ("Llama 3 Community License", "custom"),
    "llama3.1": ("Llama 3.1 Community License", "custom"),
    "llama3.2": ("Llama 3.2 Community License", "custom"),
    "qwen": ("Qwen License", "custom"),
    "qwen-research": ("Qwen Research License", "custom: research and evaluation only"),
}


def licenses_table() -> pd.DataFrame:
    return pd.DataFrame(OPEN_MODEL_LICENSES, columns=["creator", "model family", "license", "in short"]).set_index(
        "creator"
    )


def candidate_license(model: ResolvedModel) -> dict:
    raw = (model.info.license or "").strip()
    name, kind = _LICENSE_KINDS.get(raw.lower(), (raw or "not stated", "unknown: read the model card"))
    return {"model": model.spec, "license (GGUF)": raw or "not stated", "license": name, "kind": kind}
