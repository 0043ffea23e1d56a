//! The sample app.
fn main() {}
