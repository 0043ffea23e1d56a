//! Tests of the traffic layer: route tables, the front door in front of real backends, the
//! agent's side of the protocol, and the nginx adapter.
