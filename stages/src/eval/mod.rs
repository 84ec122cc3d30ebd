//! Evaluation math without tensors: the 10-fold verification protocol ([`verification`]), ROC and
//! TAR@FAR exactly as scikit-learn ([`roc`]), IJB template pooling and pair scoring ([`pooling`]),
//! 5-point alignment ([`align`]) and ROC plots ([`plot`]).

pub mod align;
pub mod plot;
pub mod pooling;
pub mod roc;
pub mod verification;
