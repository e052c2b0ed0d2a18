//! Trust: Ed25519 signing keys, the ACL of authorized keys, and signing and
//! verifying export-bundle items (Guix's canonical s-expression shapes).
//!
//! Owns: key files in the configuration directory, the `acl` file, the
//! decision "is this item signed by a key we trust". Must never: touch the
//! store database or write store paths (it answers `ferry_store::ImportCheck`
//! and signs digests handed to it).
//!
//! Status: arrives with step 4 (`ferry archive`).
