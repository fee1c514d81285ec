//! kolmctl: the kolm command line.
fn main() {}
