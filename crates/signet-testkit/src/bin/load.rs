//! `signet-load`: the soak and benchmark load generator (see `signet_testkit::load`).

fn main() -> std::process::ExitCode {
    signet_testkit::load::main()
}
