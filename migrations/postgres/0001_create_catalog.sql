-- Catalog schema for PostgreSQL. The SQLite migration of the same number
-- creates the same tables and indexes; both databases must answer every
-- query identically, so every sort key and search term is computed in Rust
-- and compared byte by byte (COLLATE "C", as SQLite's BINARY collation does).

-- One row per committed track. Integers that are unsigned in Rust are stored
-- as BIGINT and range-checked on the way in.
CREATE TABLE tracks (
    file_id       TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    file_name     TEXT    NOT NULL,
    -- The title shown: the title tag, or the file name without extension.
    title         TEXT    NOT NULL,
    -- The title tag as read from the file, NULL when the file has none.
    title_tag     TEXT,
    artist        TEXT,
    album         TEXT,
    album_artist  TEXT,
    track_number  BIGINT,
    track_total   BIGINT,
    disc_number   BIGINT,
    disc_total    BIGINT,
    year          BIGINT,
    genre         TEXT,
    duration_ms   BIGINT,
    sample_rate   BIGINT,
    channels      BIGINT,
    bitrate_kbps  BIGINT,
    format        TEXT    NOT NULL,
    content_type  TEXT    NOT NULL,
    size_bytes    BIGINT  NOT NULL,
    sha256        TEXT    NOT NULL,
    has_cover     BIGINT  NOT NULL,
    -- JSON array of node ids in ring order.
    replicas      TEXT    NOT NULL,
    added_at_ms   BIGINT  NOT NULL,
    -- Sort keys built from folded tags, one per listing order.
    title_key     TEXT COLLATE "C" NOT NULL,
    artist_key    TEXT COLLATE "C" NOT NULL,
    album_key     TEXT COLLATE "C" NOT NULL
);

-- Each listing order ends in file_id so that ties have a stable order and
-- the index alone serves ORDER BY ... LIMIT ... OFFSET in both directions.
CREATE INDEX tracks_by_title ON tracks (title_key, file_id);
CREATE INDEX tracks_by_artist ON tracks (artist_key, file_id);
CREATE INDEX tracks_by_album ON tracks (album_key, file_id);
CREATE INDEX tracks_by_added_at ON tracks (added_at_ms, file_id);

-- Integrity data for each track's blob. chunk_hashes is the concatenation of
-- the 32-byte BLAKE3 hash of every chunk, in chunk order.
CREATE TABLE manifests (
    file_id       TEXT COLLATE "C" NOT NULL PRIMARY KEY REFERENCES tracks (file_id) ON DELETE CASCADE,
    size_bytes    BIGINT NOT NULL,
    sha256        BYTEA  NOT NULL,
    chunk_size    BIGINT NOT NULL,
    chunk_hashes  BYTEA  NOT NULL
);

CREATE TABLE covers (
    file_id  TEXT COLLATE "C" NOT NULL PRIMARY KEY REFERENCES tracks (file_id) ON DELETE CASCADE,
    mime     TEXT  NOT NULL,
    data     BYTEA NOT NULL
);

-- Search index: one row per distinct folded word of a track's title,
-- artist, album, album artist and file name, with the weight of the most
-- important field it occurs in. A query word matches a term it is a prefix
-- of, found by a range scan of the primary key.
CREATE TABLE search_terms (
    term     TEXT COLLATE "C" NOT NULL,
    file_id  TEXT COLLATE "C" NOT NULL REFERENCES tracks (file_id) ON DELETE CASCADE,
    weight   BIGINT NOT NULL,
    PRIMARY KEY (term, file_id)
);

CREATE INDEX search_terms_by_file_id ON search_terms (file_id);

-- The Raft state machine's position: the last applied log id and the last
-- membership, as opaque JSON written by the Raft layer. At most one row.
CREATE TABLE applied_state (
    id               BIGINT NOT NULL PRIMARY KEY CHECK (id = 1),
    last_applied     TEXT,
    last_membership  TEXT   NOT NULL
);
