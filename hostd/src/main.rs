//! `shoal-hostd` entry point.

fn main() {
    eprintln!("shoal-hostd: not built yet (see issue 3)");
    std::process::exit(2);
}
