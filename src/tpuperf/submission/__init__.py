"""From fold predictions to a Kaggle submission: the ensemble stage and the submission CSV (write,
check, score)."""
