//! Tests of the audit log against real files in temp dirs.
