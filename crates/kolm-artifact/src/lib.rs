//! The `.kolm` artifact format, RS-1: a canonical STORED zip with 4096-aligned
//! entries, a DSSE-signed in-toto manifest and an HMAC-tagged receipt chain.

pub mod gguf;
