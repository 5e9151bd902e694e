//! Compiles proto/berth/v1 with protox (pure Rust), so no `protoc` is needed.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        root.join("berth/v1/berth.proto"),
        root.join("berth/v1/images.proto"),
        root.join("berth/v1/volumes.proto"),
        root.join("berth/v1/files.proto"),
        root.join("berth/v1/networks.proto"),
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&root])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
