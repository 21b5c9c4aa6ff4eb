//! `shoal-controller` entry point.

fn main() {
    eprintln!("shoal-controller: not built yet (see issue 2)");
    std::process::exit(2);
}
