//! The `kubepam` operator binary.
#![forbid(unsafe_code)]

fn main() {
    println!("kubepam {}", env!("CARGO_PKG_VERSION"));
}
