//! Load generator for infergate. The open-loop HTTP and Kinesis load modes land in a later change;
//! until then this binary only says so.

fn main() {
    eprintln!("loadtest: not implemented yet; see the README's Performance section");
    std::process::exit(2);
}
