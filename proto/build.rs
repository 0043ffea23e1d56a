//! Compiles `gantry/v1/gantry.proto` with the protoc binary vendored on crates.io, so the
//! build needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // tonic-prost-build finds protoc through the PROTOC variable.
    // SAFETY: build scripts run single-threaded; no other thread reads the environment.
    #[allow(unsafe_code, clippy::disallowed_methods)]
    unsafe {
        std::env::set_var("PROTOC", protoc);
    }
    println!("cargo:rerun-if-changed=gantry/v1/gantry.proto");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&["gantry/v1/gantry.proto"], &["."])?;
    Ok(())
}
