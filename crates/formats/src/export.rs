//! Export bundles (being written).
