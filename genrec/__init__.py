"""genrec: generative, LLM-based sequential recommendation (semantic IDs, generative models, constrained decoding)."""
__version__ = "0.1.0"
