//! Tests of the artifact store, the unpacker and releases.
