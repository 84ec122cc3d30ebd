//! Evaluation math without tensors: the 10-fold verification protocol, ROC / TAR@FAR as scikit-learn, IJB template pooling, 5-point alignment, plots.

