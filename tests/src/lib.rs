//! End-to-end harness for Gantry.
