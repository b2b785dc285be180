"""localllms: the library behind *Local LLMs in Practice*.

One module per stage of the study: ``build`` (compile llama.cpp), ``models``
(resolve and describe GGUF files), ``corpus`` (prompts), ``quantize`` (variants),
``evaluate`` (perplexity, KL divergence), ``bench`` (throughput), ``serve``
(llama-server and friends) and ``report`` (tables, figures, results store).
"""

__version__ = "0.1.0"
