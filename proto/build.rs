//! Compiles `kolm/daemon/v1/daemon.proto` into Rust without a system
//! `protoc`: `protox` (a protobuf compiler in Rust) parses the file into a
//! `FileDescriptorSet`, which `tonic-prost-build` turns into prost messages,
//! a tonic client and a tonic server in `OUT_DIR/kolm.daemon.v1.rs`. The
//! encoded descriptor set is written beside it for gRPC reflection.

use std::path::PathBuf;

use prost::Message;

const PROTO: &str = "kolm/daemon/v1/daemon.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO}");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    // `compile` resolves imports against the include path (this directory)
    // and keeps source info, so the .proto comments become rustdoc.
    let fds = protox::compile([PROTO], ["."])?;
    std::fs::write(
        out_dir.join("kolm.daemon.v1.descriptor.bin"),
        fds.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
