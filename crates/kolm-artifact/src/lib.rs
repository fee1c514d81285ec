//! The `.kolm` artifact format, RS-1: a canonical STORED zip with 4096-aligned
//! entries, a DSSE-signed in-toto manifest and an HMAC-tagged receipt chain.
//!
//! Write with [`pack()`]; read with [`open`] then
//! [`AuthenticatedArtifact::verify`] (or [`verify()`] for both). Only that
//! path yields a [`VerifiedArtifact`]. No async, no network.

pub mod container;
pub mod drift;
pub mod dsse;
pub mod error;
pub mod gguf;
pub mod keys;
pub mod manifest;
pub mod names;
pub mod pack;
pub mod progress;
pub mod receipts;
pub mod recipes;
pub mod serving;
pub mod verify;

pub use dsse::SignerStatus;
pub use error::{ArtifactError, ErrorKind};
pub use keys::{PublicKey, SecretKey};
pub use manifest::{EntryRecord, Predicate, Statement};
pub use pack::{pack, Component, PackReport, PackSpec};
pub use progress::{NoProgress, Progress};
pub use receipts::{ReceiptChain, ReceiptKey};
pub use verify::{
    open, verify, AuthenticatedArtifact, TrustPolicy, VerifiedArtifact, VerifiedEntry,
};
