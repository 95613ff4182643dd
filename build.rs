//! Compiles proto/profile.proto (the pprof format) into Rust with prost,
//! using protox, a pure-Rust protobuf compiler, so no system `protoc` is
//! needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/profile.proto");
    let descriptors = protox::compile(["proto/profile.proto"], ["proto"])?;
    prost_build::compile_fds(descriptors)?;
    Ok(())
}
