"""Loading Kolors under a memory plan: the pipeline manager, embeddings caches, GPU options."""
