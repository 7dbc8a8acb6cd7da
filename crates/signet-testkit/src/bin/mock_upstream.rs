//! `signet-mock-upstream`: the mock upstream as a process, for benchmarks and the demo.

fn main() {
    let options = match signet_testkit::mock::MockOptions::from_args(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("signet-mock-upstream: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = signet_testkit::mock::serve_forever(options) {
        eprintln!("signet-mock-upstream: {e}");
        std::process::exit(1);
    }
}
