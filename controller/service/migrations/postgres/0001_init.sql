-- Gantry controller service, schema version 1. Applied once, in a transaction, by
-- gantry_service::store::postgres::migrate; never edit a released migration, add the next one.
-- Records are JSON text (the same serde form as the embedded store); the columns a query
-- filters or orders on, and the lease, are real columns.

CREATE TABLE agents (
    id   text PRIMARY KEY,
    doc  text NOT NULL
);

CREATE TABLE rollouts (
    id          text PRIMARY KEY,
    created_ms  bigint NOT NULL,
    doc         text NOT NULL
);

CREATE TABLE hosts (
    rollout_id  text NOT NULL REFERENCES rollouts (id),
    agent_id    text NOT NULL,
    ring        integer NOT NULL,
    doc         text NOT NULL,
    PRIMARY KEY (rollout_id, agent_id)
);

-- One leader per rollout: the epoch only grows (every take adds one), and every fenced write
-- checks it under the same advisory lock.
CREATE TABLE leases (
    rollout_id  text PRIMARY KEY,
    holder      text NOT NULL,
    epoch       bigint NOT NULL CHECK (epoch > 0),
    expires_ms  bigint NOT NULL
);

CREATE TABLE checkpoints (
    agent_id  text PRIMARY KEY,
    key_id    text NOT NULL,
    seq       bigint NOT NULL,
    line      text NOT NULL
);

-- An operator's pending pause, resume or abort; written by any replica, applied and cleared by
-- the lease holder.
CREATE TABLE controls (
    rollout_id  text PRIMARY KEY,
    doc         text NOT NULL
);
