-- Locks, replica faults and draining members, all written only by the Raft
-- state machine.

-- Named locks. token is the log index of the entry that granted the lock
-- (its fencing token); expires_at_ms is in milliseconds since the Unix
-- epoch, computed from the leader timestamps on log entries. An expired
-- row stays until the lock is taken again or released.
CREATE TABLE locks (
    name           TEXT    NOT NULL PRIMARY KEY,
    owner          TEXT    NOT NULL,
    token          INTEGER NOT NULL,
    expires_at_ms  INTEGER NOT NULL
);

-- Copies of a file reported corrupt or missing by the node that should hold
-- them. fault is 'corrupt' or 'missing'. A row is removed when a repair
-- writes a verified copy on that node or drops the node from the file's
-- replica set.
CREATE TABLE replica_faults (
    file_id         TEXT    NOT NULL REFERENCES tracks (file_id) ON DELETE CASCADE,
    node_id         TEXT    NOT NULL,
    fault           TEXT    NOT NULL,
    reported_at_ms  INTEGER NOT NULL,
    PRIMARY KEY (file_id, node_id)
);

-- Members being decommissioned: placement leaves them out, repair moves
-- their copies to other nodes, and the leader removes them from the Raft
-- membership once no track lists them.
CREATE TABLE draining_nodes (
    node_id   TEXT    NOT NULL PRIMARY KEY,
    since_ms  INTEGER NOT NULL
);
