-- Gantry controller service, schema version 2: the flag sets the service distributes (the
-- newest version per app) and each agent's delivery of them. Records are JSON text, as in
-- version 1.

CREATE TABLE flag_sets (
    app      text PRIMARY KEY,
    version  bigint NOT NULL CHECK (version > 0),
    doc      text NOT NULL
);

CREATE TABLE flag_deliveries (
    app       text NOT NULL,
    agent_id  text NOT NULL,
    doc       text NOT NULL,
    PRIMARY KEY (app, agent_id)
);
