"""Kaggle operations: reading the kaggle CLI's failures, submitting, and the TPU kernels (build, push,
and the script a kernel runs)."""
