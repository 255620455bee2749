//! `kubectl pam`: the kubepam kubectl plugin (`kubectl-pam` on PATH).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    kubepam::plugin::main()
}
