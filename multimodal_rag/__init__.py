"""Multimodal RAG: CLIP embeddings, the similar-case index, evidence fusion, cited drafts."""
