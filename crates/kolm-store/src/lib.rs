//! The content-addressed artifact store.
