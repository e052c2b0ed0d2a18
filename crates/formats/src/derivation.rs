//! Derivations: the ATerm `.drv` format, `hashDerivationModulo`, output paths.
// (being written)
