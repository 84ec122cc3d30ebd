//! Graph views of a pipeline (being built).
