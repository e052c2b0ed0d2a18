//! NAR (being written).
