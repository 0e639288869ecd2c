//! Prints a hardware report: `cargo run --release -p squish-hwdiag --example diagnose [--json] [--quick]`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = squish_hwdiag::ProbeOptions {
        quick: args.iter().any(|a| a == "--quick"),
        ..Default::default()
    };
    let report = squish_hwdiag::probe_with(&opts);
    if args.iter().any(|a| a == "--json") {
        match report.to_json() {
            Ok(j) => println!("{j}"),
            Err(e) => eprintln!("error: {e}"),
        }
    } else {
        println!("{}", report.to_markdown());
    }
}
