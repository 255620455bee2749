//! `kubectl pam`: the kubepam kubectl plugin (`kubectl-pam` on PATH).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    kubectl_pam::main()
}
