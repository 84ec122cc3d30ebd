//! With the `torch` feature, give the package's binaries an rpath to libtorch so they run without
//! LD_LIBRARY_PATH, and force `libtorch.so` to be NEEDED so that `libtorch_cuda.so` is loaded
//! (formats.md §8.1; tch-rs #787). `DEP_TCH_LIBTORCH_LIB` is set by torch-sys, a direct dependency.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_TORCH").is_none() {
        return;
    }
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") {
        let lib = lib.to_string_lossy();
        if os == "linux" {
            println!("cargo:rustc-link-arg=-Wl,-rpath={lib}");
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
            println!("cargo:rustc-link-arg=-ltorch");
        } else if os == "macos" {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        }
    }
}
