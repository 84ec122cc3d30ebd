//! cache (being built).
