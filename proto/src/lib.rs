//! kolmd's gRPC control API: the `kolm.daemon.v1` protobuf package as Rust
//! types, a tonic client and a tonic server trait, plus the small pieces
//! both sides share.
//!
//! - [`daemon::v1`] — the generated code: one struct per message,
//!   [`daemon::v1::daemon_client::DaemonClient`] and
//!   [`daemon::v1::daemon_server::Daemon`] (the trait kolmd implements) with
//!   [`daemon::v1::daemon_server::DaemonServer`] around it. The `.proto` file
//!   (`proto/kolm/daemon/v1/daemon.proto`) is the API's documentation; its
//!   comments are copied onto the generated items.
//! - [`keep_alive`] — the keep-alive strings of `Load`, `Generate` and
//!   `Embed` (`5m`, `0`, `-1`): [`parse_keep_alive`] and
//!   [`format_keep_alive`].
//! - [`transport`] — the API over a Unix socket: [`connect_unix`],
//!   [`bind_unix`] (mode 0600), [`serve_unix`] and [`unix_incoming`].
//!
//! Code generation needs no `protoc`: the build script compiles the
//! `.proto` with `protox` and hands the descriptors to `tonic-prost-build`.
//! This crate holds no daemon logic; kolmd converts between these types and
//! its own at its boundary.

pub mod keep_alive;
pub mod transport;

pub use keep_alive::{format_keep_alive, parse_keep_alive, KeepAlive, ParseKeepAliveError};
pub use transport::{
    bind_unix, connect_unix, serve_unix, unix_incoming, BindError, ConnectError, SOCKET_MODE,
};

/// The `kolm.daemon` protobuf packages, one module per version.
pub mod daemon {
    /// `kolm.daemon.v1`, generated from `proto/kolm/daemon/v1/daemon.proto`
    /// by `tonic-prost-build` at build time.
    ///
    /// Messages are plain structs (`Default` fills unset fields); `optional`
    /// scalars and message fields are `Option`s; `oneof`s are enums in a
    /// submodule named after their message (e.g.
    /// [`generate_request::Prompt`](v1::generate_request::Prompt)); enums
    /// are Rust enums whose fields are stored as `i32` (use the generated
    /// getters, e.g. `outcome()`, and setters).
    pub mod v1 {
        // The generated code passes the workspace lints and clippy as it
        // is; if a new lint fires in it, allow it here and only here.
        tonic::include_proto!("kolm.daemon.v1");

        /// The encoded `FileDescriptorSet` of `kolm.daemon.v1`, for gRPC
        /// server reflection (e.g. `tonic-reflection`).
        pub const FILE_DESCRIPTOR_SET: &[u8] =
            include_bytes!(concat!(env!("OUT_DIR"), "/kolm.daemon.v1.descriptor.bin"));
    }
}
