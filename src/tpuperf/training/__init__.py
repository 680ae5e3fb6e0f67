"""Training: padded GraphTensor batches, ranking losses, the distribution strategy, the scorer and
the train stage (k-fold, resumable)."""
