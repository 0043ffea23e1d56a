//! The `gantry` controller CLI.
